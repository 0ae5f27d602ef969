"""paddleqa: shrink Chinese extractive QA models onto devices with the Paddle stack."""

# Paddle bundles its own zlib; importing paddle first and pyarrow (via datasets/pandas) second
# segfaults in inflateReset2. Loading the system zlib before anything imports paddle avoids it,
# so it happens here, at the package's entry point, before any submodule is imported.
import zlib  # noqa: F401  (import for its side effect, see above)

__version__ = "0.1.0"
