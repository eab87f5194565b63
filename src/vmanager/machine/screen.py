"""Screen, keyboard and mouse of a Machine (display adapter, screenshots, input)."""

from __future__ import annotations

from vmanager.machine.base import LaunchContext, MachineBase


class ScreenMixin(MachineBase):
    """Headless display with a VGA adapter, so there is always a screen to capture."""

    def _init_screen(self) -> None:
        pass

    def _prepare_launch(self, ctx: LaunchContext) -> None:
        super()._prepare_launch(ctx)
        ctx.add("-display", "none", "-vga", "std")
