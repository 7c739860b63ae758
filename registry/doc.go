// Package registry embeds the distribution v3 registry and adds Slipway's
// token auth, per-repository blob access and referrers. It is built by the
// integrated registry issue (#3); nothing is served yet.
package registry
