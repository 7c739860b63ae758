package scan

import (
	"encoding/json"
	"strings"

	cvss20 "github.com/pandatix/go-cvss/20"
	cvss30 "github.com/pandatix/go-cvss/30"
	cvss31 "github.com/pandatix/go-cvss/31"
	cvss40 "github.com/pandatix/go-cvss/40"
)

// Severity is a finding's qualitative severity.
type Severity string

// The severities, from the CVSS qualitative rating scale.
const (
	SeverityCritical Severity = "CRITICAL"
	SeverityHigh     Severity = "HIGH"
	SeverityMedium   Severity = "MEDIUM"
	SeverityLow      Severity = "LOW"
	SeverityUnknown  Severity = "UNKNOWN"
)

// Rank orders severities: 4 for CRITICAL down to 1 for LOW, 0 for UNKNOWN
// and anything else.
func (s Severity) Rank() int {
	switch s {
	case SeverityCritical:
		return 4
	case SeverityHigh:
		return 3
	case SeverityMedium:
		return 2
	case SeverityLow:
		return 1
	}
	return 0
}

// recordSeverity rates a record. A CVSS vector in severity[] (the record's
// or an affected entry's) wins, because its base score can be checked: the
// newest CVSS version present is used, and the highest score among vectors
// of that version. Otherwise a rating word is taken from
// database_specific.severity (GitHub's "MODERATE" is MEDIUM), an affected
// entry's database_specific or ecosystem_specific severity, or an "Ubuntu"
// severity entry, the highest of them. Otherwise UNKNOWN.
func recordSeverity(r *osvRecord) Severity {
	sevs := append([]osvSeverity(nil), r.Severity...)
	words := []json.RawMessage{r.DatabaseSpecific}
	for _, a := range r.Affected {
		sevs = append(sevs, a.Severity...)
		words = append(words, a.DatabaseSpecific, a.EcosystemSpecific)
	}
	bestVer, bestScore := 0, -1.0
	for _, s := range sevs {
		ver, score, ok := cvssScore(s)
		if !ok {
			continue
		}
		if ver > bestVer || (ver == bestVer && score > bestScore) {
			bestVer, bestScore = ver, score
		}
	}
	if bestVer > 0 {
		return cvssRating(bestVer, bestScore)
	}
	best := SeverityUnknown
	consider := func(word string) {
		if s := ratingWord(word); s.Rank() > best.Rank() {
			best = s
		}
	}
	for _, raw := range words {
		var ds struct {
			Severity any `json:"severity"`
		}
		if len(raw) == 0 || json.Unmarshal(raw, &ds) != nil {
			continue
		}
		if w, ok := ds.Severity.(string); ok {
			consider(w)
		}
	}
	for _, s := range sevs {
		if s.Type == "Ubuntu" {
			consider(s.Score)
		}
	}
	return best
}

// cvssScore returns the CVSS version (20, 30, 31, 40) and base score of a
// severity entry; ok is false for other types and vectors that do not
// parse.
func cvssScore(s osvSeverity) (ver int, score float64, ok bool) {
	switch {
	case s.Type == "CVSS_V4" || strings.HasPrefix(s.Score, "CVSS:4.0/"):
		v, err := cvss40.ParseVector(s.Score)
		if err != nil {
			return 0, 0, false
		}
		return 40, v.Score(), true
	case strings.HasPrefix(s.Score, "CVSS:3.1/"):
		v, err := cvss31.ParseVector(s.Score)
		if err != nil {
			return 0, 0, false
		}
		return 31, v.BaseScore(), true
	case strings.HasPrefix(s.Score, "CVSS:3.0/"):
		v, err := cvss30.ParseVector(s.Score)
		if err != nil {
			return 0, 0, false
		}
		return 30, v.BaseScore(), true
	case s.Type == "CVSS_V2":
		v, err := cvss20.ParseVector(s.Score)
		if err != nil {
			return 0, 0, false
		}
		return 20, v.BaseScore(), true
	}
	return 0, 0, false
}

// cvssRating maps a base score to the qualitative scale of its version;
// CVSS v2 has no CRITICAL, and a score of 0.0 ("None") is LOW here.
func cvssRating(ver int, score float64) Severity {
	switch {
	case score >= 9.0 && ver >= 30:
		return SeverityCritical
	case score >= 7.0:
		return SeverityHigh
	case score >= 4.0:
		return SeverityMedium
	}
	return SeverityLow
}

func ratingWord(w string) Severity {
	switch strings.ToUpper(strings.TrimSpace(w)) {
	case "CRITICAL":
		return SeverityCritical
	case "HIGH", "IMPORTANT":
		return SeverityHigh
	case "MEDIUM", "MODERATE":
		return SeverityMedium
	case "LOW", "NEGLIGIBLE", "UNIMPORTANT":
		return SeverityLow
	}
	return SeverityUnknown
}
