package api

// ScanRecord is the platform's own record of the scan of one image digest:
// cluster-scoped, named by the digest, hidden (the API never serves it) and
// written by the scanner alone. Every project's ImageScan of that digest is
// a copy of it for people to read; admission and promotion read the record,
// never the project's copy, so nothing a project's users can write counts as
// a scan.
type ScanRecord struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// Repository (REGISTRY/PROJECT/STREAM) holds the SBOM referrer the
	// scanner wrote, which a database update reads to match again.
	Repository string          `json:"repository,omitempty"`
	Status     ImageScanStatus `json:"status"`
}

// ScanRecords are the scanner's records, by digest.
var ScanRecords = Register(&Resource{
	Name: "scanrecords", Kind: "ScanRecord", Hidden: true,
	New:          func() Object { return &ScanRecord{} },
	ValidateName: ValidateDigestName,
})
