"""The only package that imports Google client libraries, and only lazily, inside functions."""
