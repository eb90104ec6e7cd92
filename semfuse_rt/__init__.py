"""semfuse-rt: semantic image fusion (Hill & Bull) with exported-graph backends.

The public API is imported lazily so that `import semfuse_rt.kernels` (say) does not pull
in torch and the whole engine.
"""
__all__ = ["Fuser", "FuseOptions", "FusionResult", "fuse", "fuse_files", "fuse_result", "load_image", "save_image"]


def __getattr__(name):
    if name in __all__:
        from semfuse_rt.engine import api

        return getattr(api, name)
    raise AttributeError(name)
