//! The ABI surface avsnode reads (`../shared/CHAIN.md`, docs/OPERATING.md "Reading from chain"):
//! declared once from the contracts' Solidity signatures, encoded and decoded by alloy. The
//! tests below pin every selector and event topic to the values CHAIN.md lists.

use alloy_primitives::{Address, B256};

alloy_sol_types::sol! {
    /// `OperatorSet`: the AVS and the set's id.
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct OperatorSet { address avs; uint32 id; }
    /// A BN254 G1 point.
    #[derive(Debug)]
    struct G1Point { uint256 X; uint256 Y; }
    /// A BN254 G2 point, coordinates as (c1, c0).
    #[derive(Debug)]
    struct G2Point { uint256[2] X; uint256[2] Y; }
    /// `TaskAVSRegistrar.getAvsConfig()`.
    #[derive(Debug)]
    struct AvsConfig { uint32 aggregatorOperatorSetId; uint32[] executorOperatorSetIds; }

    /// AllocationManager: the AVS's registrar (the AVS itself when none is set).
    function getAVSRegistrar(address avs) external view returns (address);
    /// AllocationManager: whether `operator` is a member of the set.
    function isMemberOfOperatorSet(address operator, OperatorSet operatorSet) external view returns (bool);
    /// TaskAVSRegistrar: the aggregator and executor operator sets.
    function getAvsConfig() external view returns (AvsConfig memory);
    /// KeyRegistrar: 0 none, 1 ECDSA, 2 BN254.
    function getOperatorSetCurveType(OperatorSet operatorSet) external view returns (uint8);
    /// KeyRegistrar: an operator's BN254 key in a set (zero when none is registered).
    function getBN254Key(OperatorSet operatorSet, address operator) external view returns (G1Point memory g1, G2Point memory g2);
    /// KeyRegistrar: an operator's ECDSA address in a set (zero when none is registered).
    function getECDSAAddress(OperatorSet operatorSet, address operator) external view returns (address);
    /// ECDSACertificateVerifier: its EIP-712 domain separator.
    function domainSeparator() external view returns (bytes32);
    /// ECDSACertificateVerifier: its version string.
    function version() external view returns (string memory);

    /// AllocationManager.
    event OperatorAddedToOperatorSet(address indexed operator, OperatorSet operatorSet);
    /// AllocationManager.
    event OperatorRemovedFromOperatorSet(address indexed operator, OperatorSet operatorSet);
    /// AllocationManager.
    event AVSRegistrarSet(address avs, address registrar);
    /// KeyRegistrar.
    event KeyRegistered(OperatorSet operatorSet, address indexed operator, uint8 curveType, bytes pubkey);
    /// KeyRegistrar.
    event KeyDeregistered(OperatorSet operatorSet, address indexed operator, uint8 curveType);
    /// KeyRegistrar.
    event OperatorSetConfigured(OperatorSet operatorSet, uint8 curveType);
    /// TaskAVSRegistrar (any address: the follower does not know every registrar in advance).
    event AvsConfigSet(uint32 aggregatorOperatorSetId, uint32[] executorOperatorSetIds);
}

/// KeyRegistrar's curve types.
pub(crate) const CURVE_NONE: u8 = 0;
/// ECDSA (secp256k1 addresses).
pub(crate) const CURVE_ECDSA: u8 = 1;
/// BN254 (G1 and G2 keys).
pub(crate) const CURVE_BN254: u8 = 2;

/// An operator set as the node names it.
pub(crate) fn operator_set(avs: Address, id: u32) -> OperatorSet {
    OperatorSet { avs, id }
}

/// The topic0 of every event the AllocationManager / KeyRegistrar follower asks for.
pub(crate) fn registry_topics() -> Vec<B256> {
    use alloy_sol_types::SolEvent;
    vec![
        OperatorAddedToOperatorSet::SIGNATURE_HASH,
        OperatorRemovedFromOperatorSet::SIGNATURE_HASH,
        AVSRegistrarSet::SIGNATURE_HASH,
        KeyRegistered::SIGNATURE_HASH,
        KeyDeregistered::SIGNATURE_HASH,
        OperatorSetConfigured::SIGNATURE_HASH,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::{SolCall, SolEvent};

    fn hex4(s: [u8; 4]) -> String {
        format!("0x{}", alloy_primitives::hex::encode(s))
    }

    /// CHAIN.md's table, byte for byte.
    #[test]
    fn selectors_and_topics_are_chain_md_s() {
        for (got, want) in [
            (getAVSRegistrarCall::SELECTOR, "0x304c10cd"),
            (isMemberOfOperatorSetCall::SELECTOR, "0x670d3ba2"),
            (getAvsConfigCall::SELECTOR, "0x41f548f0"),
            (getOperatorSetCurveTypeCall::SELECTOR, "0x7cffe48c"),
            (getBN254KeyCall::SELECTOR, "0x9a43e3fb"),
            (getECDSAAddressCall::SELECTOR, "0x3b32a7bd"),
            (domainSeparatorCall::SELECTOR, "0xf698da25"),
        ] {
            assert_eq!(hex4(got), want);
        }
        for (got, want) in [
            (
                OperatorAddedToOperatorSet::SIGNATURE_HASH,
                "0x43232edf9071753d2321e5fa7e018363ee248e5f2142e6c08edd3265bfb4895e",
            ),
            (
                OperatorRemovedFromOperatorSet::SIGNATURE_HASH,
                "0xad34c3070be1dffbcaa499d000ba2b8d9848aefcac3059df245dd95c4ece14fe",
            ),
            (
                AVSRegistrarSet::SIGNATURE_HASH,
                "0x2ae945c40c44dc0ec263f95609c3fdc6952e0aefa22d6374e44f2c997acedf85",
            ),
            (
                KeyRegistered::SIGNATURE_HASH,
                "0x1201ce0c5e577111bce91e907fd99cb183da5edc1e3fb650ca40769e4e9176dd",
            ),
            (
                KeyDeregistered::SIGNATURE_HASH,
                "0x28d3c3cee49478ec6fd219cfd685cd15cd01d95cabf69b4b7b57f9eaa3eb6442",
            ),
            (
                OperatorSetConfigured::SIGNATURE_HASH,
                "0xb2266cb118e57095fcdbedb24dabd9fc9f5127e2dbedf62ce6ee71696fb8b6e7",
            ),
            (
                AvsConfigSet::SIGNATURE_HASH,
                "0x836f1d33f6d85cfc7b24565d309c6e1486cf56dd3d8267a9651e05b88342ef51",
            ),
        ] {
            assert_eq!(got.to_string(), want);
        }
    }
}
