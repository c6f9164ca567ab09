// Package certs gives every meshed workload a SPIFFE identity and keeps a
// certificate for it.
//
// The pieces, pure cores first:
//
//   - Identity: spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>,
//     parsed and validated in one place.
//   - Issuer: signs a CSR for an identity and returns the chain and roots.
//     Implementations live in certs/builtin (weft's own CA, the default) and
//     certs/certmanager (a CertificateRequest per certificate).
//   - Manager: one key and certificate per identity that has proxies
//     connected; renews at half the lifetime with jitter, retries with
//     backoff, and tells subscribers (the xDS layer) when a secret changes.
//     Issuing never happens inside translation: the translator only names
//     secrets, the Manager fills them.
//   - Bundle and Rotation: the trust bundle proxies validate peers with, and
//     staged root rotation as a pure state machine.
package certs
