# pragma version ~=0.4.3
"""
@title KeyRegistrar (TEST STAND-IN)
@notice Test stand-in reproducing the ABI surface (selectors, return layouts,
        events, custom-error-style reverts) of the EigenLayer KeyRegistrar that
        avsnode reads. It is NOT EigenLayer's code: it is written from scratch
        for avsnode's Python test chain (tests/chain). Key registration is
        unrestricted and takes no signature, for tests only.
        Key data: ECDSA = the 20-byte address; BN254 = abi.encode of six
        uint256 (G1.X, G1.Y, G2.X[0], G2.X[1], G2.Y[0], G2.Y[1]), stored as given.
"""

struct OperatorSet:
    avs: address
    id: uint32

struct G1Point:
    X: uint256
    Y: uint256

struct G2Point:
    X: uint256[2]
    Y: uint256[2]

CURVE_NONE: constant(uint8) = 0
CURVE_ECDSA: constant(uint8) = 1
CURVE_BN254: constant(uint8) = 2
BN254_KEY_LEN: constant(uint256) = 192

event OperatorSetConfigured:
    operatorSet: OperatorSet
    curveType: uint8

event KeyRegistered:
    operatorSet: OperatorSet
    operator: indexed(address)
    curveType: uint8
    pubkey: Bytes[192]

event KeyDeregistered:
    operatorSet: OperatorSet
    operator: indexed(address)
    curveType: uint8

curve_of: HashMap[bytes32, uint8]
key_of: HashMap[bytes32, HashMap[address, Bytes[192]]]
registered: HashMap[bytes32, HashMap[address, bool]]


@pure
@internal
def _key(s: OperatorSet) -> bytes32:
    return keccak256(abi_encode(s.avs, s.id))


@pure
@internal
def _fail(sig: String[64]):
    # custom-error-style revert: only the 4-byte selector of `sig`
    raw_revert(slice(keccak256(sig), 0, 4))


@view
@internal
def _require_curve(k: bytes32, want: uint8):
    # also when the set is not configured (curve type 0)
    if self.curve_of[k] != want:
        self._fail("InvalidCurveType()")


@external
def configureOperatorSet(operatorSet: OperatorSet, curveType: uint8):
    k: bytes32 = self._key(operatorSet)
    if curveType != CURVE_ECDSA and curveType != CURVE_BN254:
        self._fail("InvalidCurveType()")
    if self.curve_of[k] != CURVE_NONE:
        self._fail("ConfigurationAlreadySet()")
    self.curve_of[k] = curveType
    log OperatorSetConfigured(operatorSet=operatorSet, curveType=curveType)


@view
@external
def getOperatorSetCurveType(operatorSet: OperatorSet) -> uint8:
    return self.curve_of[self._key(operatorSet)]


@external
def registerKey(operator: address, operatorSet: OperatorSet, keyData: Bytes[192]):
    k: bytes32 = self._key(operatorSet)
    c: uint8 = self.curve_of[k]
    if c == CURVE_NONE:
        self._fail("OperatorSetNotConfigured()")
    if self.registered[k][operator]:
        self._fail("KeyAlreadyRegistered()")
    if c == CURVE_ECDSA and len(keyData) != 20:
        self._fail("InvalidKeyFormat()")
    if c == CURVE_BN254 and len(keyData) != BN254_KEY_LEN:
        self._fail("InvalidKeyFormat()")
    self.registered[k][operator] = True
    self.key_of[k][operator] = keyData
    log KeyRegistered(operatorSet=operatorSet, operator=operator, curveType=c, pubkey=keyData)


@external
def deregisterKey(operator: address, operatorSet: OperatorSet):
    k: bytes32 = self._key(operatorSet)
    c: uint8 = self.curve_of[k]
    if c == CURVE_NONE:
        self._fail("OperatorSetNotConfigured()")
    if not self.registered[k][operator]:
        self._fail("KeyNotFound()")
    self.registered[k][operator] = False
    self.key_of[k][operator] = b""
    log KeyDeregistered(operatorSet=operatorSet, operator=operator, curveType=c)


@view
@external
def isRegistered(operatorSet: OperatorSet, operator: address) -> bool:
    return self.registered[self._key(operatorSet)][operator]


@view
@external
def getECDSAAddress(operatorSet: OperatorSet, operator: address) -> address:
    k: bytes32 = self._key(operatorSet)
    self._require_curve(k, CURVE_ECDSA)
    if not self.registered[k][operator]:
        return empty(address)
    return convert(convert(slice(self.key_of[k][operator], 0, 20), bytes20), address)


@view
@external
def getBN254Key(operatorSet: OperatorSet, operator: address) -> (G1Point, G2Point):
    k: bytes32 = self._key(operatorSet)
    self._require_curve(k, CURVE_BN254)
    if not self.registered[k][operator]:
        return empty(G1Point), empty(G2Point)
    d: Bytes[192] = self.key_of[k][operator]
    g1: G1Point = G1Point(X=convert(extract32(d, 0), uint256), Y=convert(extract32(d, 32), uint256))
    g2: G2Point = G2Point(
        X=[convert(extract32(d, 64), uint256), convert(extract32(d, 96), uint256)],
        Y=[convert(extract32(d, 128), uint256), convert(extract32(d, 160), uint256)],
    )
    return g1, g2
