"""What `apply` did to a model: routed module paths and skipped ones with their reasons."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Routing:
    """`routed`: module path -> definition name; `skipped`: module path -> reason;
    `hooks`: module path -> how it was routed ('kernels' through kernelize, or 'instance');
    `generated`: family definitions written into the database for this model."""

    routed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)
    generated: list[str] = field(default_factory=list)

    @property
    def definitions(self) -> list[str]:
        """The distinct definitions the routed modules call, sorted."""
        return sorted(set(self.routed.values()))

    def __str__(self) -> str:
        lines = [f"routed {len(self.routed)} modules to {len(self.definitions)} definitions"]
        lines += [f"  {path} -> {name} ({self.hooks.get(path, 'instance')})"
                  for path, name in self.routed.items()]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped.items()]
        return "\n".join(lines)
