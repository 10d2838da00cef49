"""ComfyUI entry point of the CA-ToMe node pack (ComfyUI imports this from custom_nodes/)."""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
