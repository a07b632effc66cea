# pragma version ~=0.4.3
"""
@title ECDSACertificateVerifier (TEST STAND-IN)
@notice Test stand-in reproducing the part of the EigenLayer
        ECDSACertificateVerifier ABI that avsnode reads: version() and
        domainSeparator(). It is NOT EigenLayer's code: it is written from
        scratch for avsnode's Python test chain (tests/chain).
        domainSeparator = keccak256(abi.encode(
            keccak256("EIP712Domain(string name,string version,address verifyingContract)"),
            keccak256("EigenLayer"), keccak256("1"), address(this)))
"""

VERSION: constant(String[8]) = "1.9.0"
DOMAIN_TYPEHASH: constant(bytes32) = keccak256("EIP712Domain(string name,string version,address verifyingContract)")
NAME_HASH: constant(bytes32) = keccak256("EigenLayer")
VERSION_HASH: constant(bytes32) = keccak256("1")


@view
@external
def version() -> String[8]:
    return VERSION


@view
@external
def domainSeparator() -> bytes32:
    return keccak256(abi_encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, self))
