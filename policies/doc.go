// Package policies scans, signs and verifies images and checks per-project
// rules. It is built by the trust and promotion issue (#6); nothing is here
// yet.
package policies
