"""Algorithm registry: config name -> class with ``update(batch) -> metrics``."""

from drl.algorithms.alignprop import AlignProp
from drl.algorithms.base import Algorithm, TrainContext
from drl.algorithms.ddpo import DDPO
from drl.algorithms.dpo import DPO
from drl.algorithms.nft import NFT
from drl.algorithms.pretrain import Pretrain
from drl.algorithms.rwr import RWR

ALGORITHMS: dict[str, type[Algorithm]] = {
    "pretrain": Pretrain,
    "rwr": RWR,
    "ddpo": DDPO,
    "alignprop": AlignProp,
    "nft": NFT,
    "dpo": DPO,
}

__all__ = ["ALGORITHMS", "Algorithm", "TrainContext"]
