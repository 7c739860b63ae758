// Package imagestreams keeps ImageStreams, Images, tags and their history,
// and turns tag moves into events. It is built by the integrated registry
// issue (#3); nothing is here yet.
package imagestreams
