"""vmanager: script QEMU/KVM machines and the virtual networks between them."""
