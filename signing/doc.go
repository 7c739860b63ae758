// Package signing signs images and their build provenance with per-project
// cosign keys, and verifies them, in the formats cosign itself reads and
// writes: signatures and attestations are stored both in cosign's tag layout
// (REPO:sha256-<hex>.sig and .att) and as OCI 1.1 referrers of the image, so
// `cosign verify --key` and `cosign verify-attestation` accept what Sign and
// Attest write, and registries and tools that list referrers find them.
//
// Everything is by digest: Sign, Attest, Verify and VerifyAttestation refuse
// a tag. Nothing goes to a transparency log or a certificate authority; keys
// are the only trust. Private keys are cosign's encrypted PEM
// ("ENCRYPTED SIGSTORE PRIVATE KEY"), safe to store; the password is the
// caller's secret.
//
// Concurrent Sign (or Attest) calls for one image each rewrite the .sig
// (.att) tag from what they read, as cosign does, so one of two racing
// signatures can be missing from the tag; the referrers keep both.
package signing
