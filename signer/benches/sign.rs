//! Per-signature costs of the three schemes (targets in the foundation issue and
//! docs/PERFORMANCE.md). Run with `cargo bench -p avsnode-signer --bench sign`.

use std::hint::black_box;

use avsnode_signer::bn254::{self, HashToG1};
use avsnode_signer::messages::{ResultCertificate, TaskId, certificate_digest};
use avsnode_signer::{VerifyingKey, bls12_381, ecdsa};
use criterion::{Criterion, criterion_group, criterion_main};

fn schemes(c: &mut Criterion) {
    let (_, digest) = certificate_digest(
        &ResultCertificate::Bn254,
        &TaskId([7; 32]),
        1_700_000_000,
        b"output",
    );
    let prehash = *digest.as_bytes();

    let ecdsa_key = ecdsa::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
    let ecdsa_address = ecdsa_key.public_key().address();
    let ecdsa_sig = ecdsa_key.sign(&digest);
    c.bench_function("ecdsa/sign", |b| {
        b.iter(|| ecdsa_key.sign(black_box(&digest)))
    });
    c.bench_function("ecdsa/verify (recover)", |b| {
        b.iter(|| ecdsa::verify(&ecdsa_address, black_box(&prehash), &ecdsa_sig))
    });

    let bn_key = bn254::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
    let bn_pk = bn_key.public_key_g2();
    let bn_sig = bn_key.sign(&digest, HashToG1::Solidity);
    c.bench_function("bn254/sign (H_sol)", |b| {
        b.iter(|| bn_key.sign(black_box(&digest), HashToG1::Solidity))
    });
    c.bench_function("bn254/sign (H_rfc)", |b| {
        b.iter(|| bn_key.sign(black_box(&digest), HashToG1::Rfc9380))
    });
    c.bench_function("bn254/verify (H_sol)", |b| {
        b.iter(|| bn254::verify(&bn_pk, black_box(&prehash), &bn_sig, HashToG1::Solidity))
    });

    let bls_key = bls12_381::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
    let bls_pk = bls_key.public_key();
    let bls_sig = bls_key.sign(&digest);
    c.bench_function("bls12-381/sign", |b| {
        b.iter(|| bls_key.sign(black_box(&digest)))
    });
    c.bench_function("bls12-381/verify", |b| {
        b.iter(|| bls12_381::verify(&bls_pk, black_box(&prehash), &bls_sig))
    });
}

/// The aggregator check as the node makes it (`VerifyingKey`, BN254 keys prepared): one
/// signature alone, and a batch of 64 (what a saturated node checks at once; time per batch).
fn aggregator_checks(c: &mut Criterion) {
    let digests: Vec<_> = (0..64u8)
        .map(|i| certificate_digest(&ResultCertificate::Bn254, &TaskId([i; 32]), 1, b"o").1)
        .collect();
    let bn_key = bn254::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
    let bls_key = bls12_381::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
    let keys = [
        (
            "bn254",
            VerifyingKey::bn254(bn_key.public_key_g2()),
            digests
                .iter()
                .map(|d| bn_key.sign(d, HashToG1::Rfc9380).to_wire().to_vec())
                .collect::<Vec<_>>(),
        ),
        (
            "bls12-381",
            VerifyingKey::Bls12381(bls_key.public_key()),
            digests
                .iter()
                .map(|d| bls_key.sign(d).to_bytes().to_vec())
                .collect(),
        ),
    ];
    for (name, key, signatures) in &keys {
        let items: Vec<([u8; 32], &[u8])> = digests
            .iter()
            .zip(signatures)
            .map(|(d, s)| (*d.as_bytes(), &s[..]))
            .collect();
        c.bench_function(&format!("{name}/aggregator check, one"), |b| {
            b.iter(|| assert!(key.verify(black_box(&items[0].0), items[0].1)))
        });
        c.bench_function(&format!("{name}/aggregator check, batch of 64"), |b| {
            b.iter(|| key.verify_batch(black_box(&items)))
        });
    }
}

criterion_group!(benches, schemes, aggregator_checks);
criterion_main!(benches);
