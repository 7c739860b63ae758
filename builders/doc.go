// Package builders runs BuildConfigs on BuildKit (Dockerfile and
// Source-to-Image) and plans mass rebuilds. It is built by the builds issue
// (#4); nothing is here yet.
package builders
