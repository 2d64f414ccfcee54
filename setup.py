"""robust_losses: noise-robust classification losses in JAX, with Flax experiments."""
from setuptools import find_packages, setup

setup(
    name="robust_losses",
    version="0.1.0",
    description="Noise-robust classification losses for JAX/optax, with data-parallel Flax experiments.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["robust_losses*", "experiments*", "configs*", "benchmarks*"]),
    install_requires=[
        "jax>=0.10,<0.11",
        "jaxlib>=0.10,<0.11",
        "flax>=0.12.7",
        "optax>=0.2.8",
        "chex>=0.1.92",
        "ml-collections>=1.0",
        "absl-py",
        "numpy",
        "tensorflow-datasets>=4.9.7",
        "array-record",
        "orbax-checkpoint>=0.11",
        "scikit-learn",
        "tqdm",
        "matplotlib",
        "tensorboardX",
        "pillow",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist"],
        # PyTorch (CPU build) is only the reference side of benchmarks/.
        "bench": ["torch"],
    },
)
