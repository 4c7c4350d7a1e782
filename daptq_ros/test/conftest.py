"""Shared test settings: small CPUs, quiet torchao, deterministic seeds."""

import logging
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.getLogger("torchao").setLevel(logging.ERROR)
