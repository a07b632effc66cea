# pragma version ~=0.4.3
"""
@title AllocationManager (TEST STAND-IN)
@notice Test stand-in reproducing the ABI surface (selectors, return layouts,
        events) of the EigenLayer AllocationManager that avsnode reads. It is
        NOT EigenLayer's code: it is written from scratch for avsnode's Python
        test chain (tests/chain). Setters are unrestricted, for tests only.
"""

struct OperatorSet:
    avs: address
    id: uint32

MAX_SETS: constant(uint256) = 64

event AVSRegistrarSet:
    avs: address
    registrar: address

event OperatorAddedToOperatorSet:
    operator: indexed(address)
    operatorSet: OperatorSet

event OperatorRemovedFromOperatorSet:
    operator: indexed(address)
    operatorSet: OperatorSet

registrar_of: HashMap[address, address]
member: HashMap[address, HashMap[bytes32, bool]]
sets_of: HashMap[address, DynArray[OperatorSet, MAX_SETS]]


@pure
@internal
def _key(s: OperatorSet) -> bytes32:
    return keccak256(abi_encode(s.avs, s.id))


@view
@external
def getAVSRegistrar(avs: address) -> address:
    # The real contract falls back to the AVS itself when no registrar is set.
    r: address = self.registrar_of[avs]
    if r == empty(address):
        return avs
    return r


@view
@external
def isMemberOfOperatorSet(operator: address, operatorSet: OperatorSet) -> bool:
    return self.member[operator][self._key(operatorSet)]


@view
@external
def getRegisteredSets(operator: address) -> DynArray[OperatorSet, MAX_SETS]:
    return self.sets_of[operator]


@external
def setAVSRegistrar(avs: address, registrar: address):
    self.registrar_of[avs] = registrar
    log AVSRegistrarSet(avs=avs, registrar=registrar)


@external
def addToOperatorSet(operator: address, operatorSet: OperatorSet):
    k: bytes32 = self._key(operatorSet)
    assert not self.member[operator][k], "already a member"
    self.member[operator][k] = True
    self.sets_of[operator].append(operatorSet)
    log OperatorAddedToOperatorSet(operator=operator, operatorSet=operatorSet)


@external
def removeFromOperatorSet(operator: address, operatorSet: OperatorSet):
    k: bytes32 = self._key(operatorSet)
    assert self.member[operator][k], "not a member"
    self.member[operator][k] = False
    sets: DynArray[OperatorSet, MAX_SETS] = self.sets_of[operator]
    n: uint256 = len(sets)
    for i: uint256 in range(MAX_SETS):
        if i >= n:
            break
        if self._key(sets[i]) == k:
            sets[i] = sets[n - 1]
            sets.pop()
            break
    self.sets_of[operator] = sets
    log OperatorRemovedFromOperatorSet(operator=operator, operatorSet=operatorSet)
