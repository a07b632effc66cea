# pragma version ~=0.4.3
"""
@title TaskAVSRegistrar (TEST STAND-IN)
@notice Test stand-in reproducing the ABI surface (selectors, return layouts,
        events) of the Hourglass/EigenLayer TaskAVSRegistrar that avsnode
        reads. It is NOT that contract's code: it is written from scratch for
        avsnode's Python test chain (tests/chain). setAvsConfig is
        unrestricted, for tests only.
"""

MAX_EXECUTOR_SETS: constant(uint256) = 32

struct AvsConfig:
    aggregatorOperatorSetId: uint32
    executorOperatorSetIds: DynArray[uint32, MAX_EXECUTOR_SETS]

event AvsConfigSet:
    aggregatorOperatorSetId: uint32
    executorOperatorSetIds: DynArray[uint32, MAX_EXECUTOR_SETS]

avs: public(immutable(address))
config: AvsConfig


@deploy
def __init__(avs_: address):
    avs = avs_


@view
@external
def getAvsConfig() -> AvsConfig:
    # One struct, ABI-encoded as the single tuple (uint32,uint32[]), like a
    # Solidity function returning `AvsConfig memory`.
    return self.config


@external
def setAvsConfig(config: AvsConfig):
    self.config = config
    log AvsConfigSet(
        aggregatorOperatorSetId=config.aggregatorOperatorSetId,
        executorOperatorSetIds=config.executorOperatorSetIds,
    )
