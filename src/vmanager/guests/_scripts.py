"""Files of the tiny guest's initramfs (busybox shell scripts run inside the guest)."""

from __future__ import annotations

#: Printed on the first serial port once every shell of the guest is up.
READY_LINE = "vmanager-guest: ready"
#: Printed by the backdoor shell on its virtio port when it takes commands.
BACKDOOR_HELLO = "@@vmready"
#: Prefix of each backdoor answer line.
BACKDOOR_REPLY = "@@vmresp"

INIT = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
# Cold-plug: load the drivers of the devices present, then let the kernel's
# hotplug helper load drivers for devices added later (NICs, disks, memory).
# Loading virtio_pci makes virtio devices appear, hence a second pass.
modprobe -qa evdev $(sort -u /sys/bus/*/devices/*/modalias)
modprobe -qa $(sort -u /sys/bus/*/devices/*/modalias)
uevent /sbin/hotplug </dev/null >/dev/null 2>&1 &
exec /sbin/init
"""

RC = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vm.hostname=*) hostname "${arg#vm.hostname=}" ;;
  esac
done
ip link set lo up
mkdir -p /mnt /root /var/run /var/log /etc/acpi/PWRF
# The ACPI power button (QMP system_powerdown) powers the guest off.
acpid -c /etc/acpi -l /var/log/acpid.log
# virtio_console makes the backdoor's port a moment after the module loads.
n=0; while ! grep -qx vmanager.shell /sys/class/virtio-ports/*/name 2>/dev/null &&
  [ $n -lt 100 ]; do usleep 10000; n=$((n+1)); done
"""

INITTAB = """::sysinit:/etc/rc
ttyS0::respawn:/bin/serial-shell
::respawn:/bin/backdoor
tty1::respawn:/bin/vt-shell
tty2::respawn:/bin/vt-shell
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""

SERIAL_SHELL = f"""#!/bin/sh
stty -echo 2>/dev/null
echo "{READY_LINE}"
export PS1='# ' HOME=/root ENV=
cd /root
exec /bin/sh
"""

VT_SHELL = """#!/bin/sh
export PS1='$(tty)# ' HOME=/root
cd /root
exec /bin/sh
"""

# The backdoor reads "<id> <timeout> <base64 command>" lines and answers
# "@@vmresp <id> <status> O<base64 stdout> E<base64 stderr>" on the virtio serial
# port named vmanager.shell. A port is a plain character device: no tty layer,
# line discipline, echo, job control or hangup, so nothing a VT switch or a
# console reopen does can stall its input (on hvc0, a virtconsole, it sometimes
# stopped after VT switches).
# While vmanager is disconnected, read sees EOF: the script keeps the port open
# and polls (closing it would make the kernel discard a command that arrives as
# vmanager reconnects); an answer written meanwhile waits for the reconnect.
# Right after a reconnect the port can report EOF in the middle of a line (the
# data is there before the kernel learns the host is back): the part read so
# far is kept and the rest appended. vmanager starts each command with a
# newline, so a line a vanished host left half-written never prefixes it.
BACKDOOR = f"""#!/bin/sh
export HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin
port=
for d in /sys/class/virtio-ports/*; do
  [ "$(cat "$d/name" 2>/dev/null)" = vmanager.shell ] && port=/dev/${{d##*/}}
done
if [ -z "$port" ]; then sleep 5; exit 1; fi
exec <>"$port" >&0 2>/dev/null
echo "{BACKDOOR_HELLO}"
set -f  # no globbing when a line is split into its fields
line=
while :; do
  if ! IFS= read -r part; then
    line="$line$part"
    sleep 0.2
    continue
  fi
  set -- $line$part
  line=
  id=$1 limit=$2 cmd=$3
  [ -n "$id" ] && [ -n "$cmd" ] || continue
  base64 -d > /tmp/.vm-cmd 2>/dev/null <<END
$cmd
END
  (cd /root && exec sh /tmp/.vm-cmd) </dev/null >/tmp/.vm-out 2>/tmp/.vm-err &
  pid=$!
  (sleep "$limit" && kill -9 "$pid") </dev/null >/dev/null 2>&1 &
  dog=$!
  wait "$pid"
  rc=$?
  kill "$dog" 2>/dev/null
  # Empty output needs no encoder (each fork costs under TCG).
  out= err=
  [ -s /tmp/.vm-out ] && out=$(base64 -w0 < /tmp/.vm-out)
  [ -s /tmp/.vm-err ] && err=$(base64 -w0 < /tmp/.vm-err)
  printf '{BACKDOOR_REPLY} %s %s O%s E%s\\n' "$id" "$rc" "$out" "$err"
done
"""

HOTPLUG = """#!/bin/sh
[ -n "$MODALIAS" ] && exec /sbin/modprobe -q "$MODALIAS"
exit 0
"""

POWER_BUTTON = """#!/bin/sh
poweroff
"""

UDHCPC_SCRIPT = """#!/bin/sh
# Configure what udhcpc leased (busybox calls this with $1 = the event).
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    ;;
esac
exit 0
"""

ETC_PASSWD = "root:x:0:0:root:/root:/bin/sh\n"  # noqa: S105 (no password: x)
GROUP = "root:x:0:\n"
