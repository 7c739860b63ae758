// Package scan makes the software bill of materials of an image and
// matches it against an offline OSV vulnerability database.
//
// NewSBOM reads an image's flattened filesystem and lists its Debian and
// Alpine packages and the modules of its Go binaries, using osv-scalibr's
// extractors; the result is kept as CycloneDX JSON, which ParseSBOM reads
// back, so a stored SBOM can be matched again after a database update
// without the image. LoadDB reads OSV records as osv.dev exports them (a
// zip per ecosystem, or a directory of JSON files), and (*DB).Match
// compares versions with each ecosystem's own ordering. Apply sets
// findings aside with VEX-style ignores that expire.
package scan
