package imagestreams

import (
	"os"
	"testing"

	"slipway.dev/slipway/store/storetest"
)

// The Recorder's tests run on a real embedded etcd.
func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
