package signalingtest

import (
	"context"
	"net/http"
	"testing"

	"github.com/parley-rtc/parley/broker"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape reads the edge's /metrics into metric families, with
// c.MetricsKey (an admin key of every tenant with ops:read).
func (c *Client) Scrape() map[string]*dto.MetricFamily {
	c.T.Helper()
	req, err := http.NewRequest(http.MethodGet, c.Base+"/metrics", nil)
	if err != nil {
		c.T.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.MetricsKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		c.T.Fatalf("GET /metrics: %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		c.T.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// MetricValue is the value of the series of name with labels (name,
// value, …): a counter, gauge, or a histogram's sample count; ok is false
// when absent.
func MetricValue(mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// AdminKeys is the part of the broker that makes admin keys.
type AdminKeys interface {
	CreateAdminKey(ctx context.Context, tenant, name string, scopes []string) (string, broker.KeyInfo, error)
}

// NewMetricsKey makes an admin key of every tenant with ops:read, for
// Client.MetricsKey.
func NewMetricsKey(t testing.TB, keys AdminKeys) string {
	t.Helper()
	key, _, err := keys.CreateAdminKey(context.Background(), "", "metrics scrape", []string{broker.ScopeOpsRead})
	if err != nil {
		t.Fatalf("metrics key: %v", err)
	}
	return key
}
