package etcd

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberSpace is one member's backend: its database file, the part of it
// in use, and the quota past which it refuses writes (NOSPACE).
type MemberSpace struct {
	Endpoint               string // "" for an in-process client
	MemberID               uint64
	DBSize, DBInUse, Quota int64
}

// Alarm is an active etcd alarm: NOSPACE (a member's database reached its
// quota; every write of the cluster fails) or CORRUPT.
type Alarm struct {
	MemberID uint64
	Type     string
}

// Space is what etcd reports about its space: every member that
// answered, and the cluster's active alarms.
type Space struct {
	Members []MemberSpace
	Alarms  []Alarm
	// Unreachable are the endpoints that did not answer a status request.
	Unreachable []string
}

// CheckSpace asks etcd for its alarms and each endpoint's database size
// and quota. It works on an in-process client (the embedded etcd) and on
// a client of an external cluster. It fails only when etcd answers
// nothing at all.
func CheckSpace(ctx context.Context, c *clientv3.Client) (Space, error) {
	var sp Space
	alarms, err := c.AlarmList(ctx)
	if err != nil {
		return sp, fmt.Errorf("etcd: listing alarms: %w", err)
	}
	for _, a := range alarms.Alarms {
		sp.Alarms = append(sp.Alarms, Alarm{MemberID: a.MemberID, Type: a.Alarm.String()})
	}
	endpoints := c.Endpoints()
	if len(endpoints) == 0 {
		endpoints = []string{""} // in process: the member itself
	}
	for _, ep := range endpoints {
		st, err := c.Status(ctx, ep)
		if err != nil {
			sp.Unreachable = append(sp.Unreachable, ep)
			continue
		}
		sp.Members = append(sp.Members, MemberSpace{Endpoint: ep, MemberID: st.Header.MemberId, DBSize: st.DbSize, DBInUse: st.DbSizeInUse, Quota: st.DbSizeQuota})
	}
	if len(sp.Members) == 0 {
		return sp, fmt.Errorf("etcd: no endpoint answered a status request (%s)", strings.Join(endpoints, ", "))
	}
	return sp, nil
}

// WarnFraction is how full a database may get before Problem warns.
const WarnFraction = 0.8

// Problem says what is wrong and what to do, or "" when etcd takes
// writes. fatal is true when etcd refuses writes (an alarm is active):
// the platform cannot work and should not be sent traffic. A database
// past WarnFraction of its quota is reported, not fatal.
func (sp Space) Problem() (msg string, fatal bool) {
	var parts []string
	for _, a := range sp.Alarms {
		switch a.Type {
		case pb.AlarmType_NOSPACE.String():
			m := sp.member(a.MemberID)
			parts = append(parts, fmt.Sprintf("etcd alarm NOSPACE on member %x: its database (%s of a %s quota) is full and etcd refuses every write of the platform. "+
				"To recover: delete objects the projects no longer need (and lower the project limits, slipway start --project-object-limit), compact and defragment etcd "+
				"(`etcdctl compact REV` with the revision `etcdctl endpoint status -w json` shows, then `etcdctl defrag`), then clear the alarm with `etcdctl alarm disarm`; "+
				"or restart with a larger --etcd-quota-backend-bytes", a.MemberID, mib(m.DBSize), mib(m.Quota)))
		case pb.AlarmType_CORRUPT.String():
			parts = append(parts, fmt.Sprintf("etcd alarm CORRUPT on member %x: its data differs from the other members'. Stop writes, restore that member from a snapshot of a healthy one (etcdctl snapshot save / etcdutl snapshot restore), then `etcdctl alarm disarm`", a.MemberID))
		default:
			parts = append(parts, fmt.Sprintf("etcd alarm %s on member %x; see `etcdctl alarm list`, then `etcdctl alarm disarm`", a.Type, a.MemberID))
		}
	}
	fatal = len(parts) > 0
	for _, m := range sp.Members {
		if m.Quota > 0 && float64(m.DBSize) >= WarnFraction*float64(m.Quota) {
			parts = append(parts, fmt.Sprintf("etcd's database%s is %s of its %s quota (%s in use): at the quota etcd refuses every write. Delete objects the projects no longer need, compact and defragment (etcdctl defrag), or raise --etcd-quota-backend-bytes",
				endpointSuffix(m.Endpoint), mib(m.DBSize), mib(m.Quota), mib(m.DBInUse)))
		}
	}
	return strings.Join(parts, "\n"), fatal
}

func (sp Space) member(id uint64) MemberSpace {
	for _, m := range sp.Members {
		if m.MemberID == id {
			return m
		}
	}
	if len(sp.Members) > 0 {
		return sp.Members[0]
	}
	return MemberSpace{}
}

func endpointSuffix(ep string) string {
	if ep == "" {
		return ""
	}
	return " at " + ep
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// SpaceCollector exports etcd's space as Prometheus gauges, read at each
// scrape: database size, size in use and quota per endpoint, and the
// number of members with each alarm (NOSPACE and CORRUPT always, so an
// alert can compare with 0).
type SpaceCollector struct {
	client  *clientv3.Client
	size    *prometheus.Desc
	inUse   *prometheus.Desc
	quota   *prometheus.Desc
	alarms  *prometheus.Desc
	up      *prometheus.Desc
	timeout time.Duration
}

// NewSpaceCollector returns a collector over c.
func NewSpaceCollector(c *clientv3.Client) *SpaceCollector {
	return &SpaceCollector{
		client:  c,
		size:    prometheus.NewDesc("slipway_etcd_db_size_bytes", "Size of etcd's database file, per endpoint (\"\" is the embedded member).", []string{"endpoint"}, nil),
		inUse:   prometheus.NewDesc("slipway_etcd_db_size_in_use_bytes", "Part of etcd's database in use (the rest is freed by compaction and returned by defrag).", []string{"endpoint"}, nil),
		quota:   prometheus.NewDesc("slipway_etcd_db_quota_bytes", "etcd's backend quota: at it, etcd raises NOSPACE and refuses every write.", []string{"endpoint"}, nil),
		alarms:  prometheus.NewDesc("slipway_etcd_alarms", "Members with an active etcd alarm, by alarm (NOSPACE, CORRUPT).", []string{"alarm"}, nil),
		up:      prometheus.NewDesc("slipway_etcd_status_up", "1 if etcd answered the status request of the last scrape.", nil, nil),
		timeout: 5 * time.Second,
	}
}

// Describe implements prometheus.Collector.
func (c *SpaceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.inUse, c.quota, c.alarms, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *SpaceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	sp, err := CheckSpace(ctx, c.client)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, m := range sp.Members {
		ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(m.DBSize), m.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(m.DBInUse), m.Endpoint)
		ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(m.Quota), m.Endpoint)
	}
	count := map[string]int{pb.AlarmType_NOSPACE.String(): 0, pb.AlarmType_CORRUPT.String(): 0}
	for _, a := range sp.Alarms {
		count[a.Type]++
	}
	types := make([]string, 0, len(count))
	for t := range count {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		ch <- prometheus.MustNewConstMetric(c.alarms, prometheus.GaugeValue, float64(count[t]), t)
	}
}
