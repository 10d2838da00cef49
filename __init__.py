"""ComfyUI entry point of the CA-ToMe node pack (ComfyUI imports this from custom_nodes/).

Outside ComfyUI (e.g. pytest collecting this folder) there is nothing to register, so the
folder still imports cleanly; inside ComfyUI the nodes import eagerly, so any error shows
with its full traceback in ComfyUI's log.
"""

try:
    import comfy_api  # noqa: F401  (present whenever ComfyUI imports this pack)
except ImportError:
    __all__ = []
else:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
