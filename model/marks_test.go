package model_test

import (
	"os"
	"testing"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/model/modeltest"
)

// A job's mark starts absent and only moves forward: a run that finishes
// after a later one leaves the later mark.
func TestMarks(t *testing.T) {
	modeltest.ForEach(t, os.Getenv, func(t *testing.T, s *model.Store) {
		if _, ok, err := s.Mark("job"); err != nil || ok {
			t.Fatalf("fresh mark: ok %v err %v, want none", ok, err)
		}
		t1 := time.Date(2026, 3, 1, 2, 0, 0, 123456789, time.UTC)
		for _, at := range []time.Time{t1, t1.Add(-time.Hour), t1} {
			if err := s.SetMark("job", at); err != nil {
				t.Fatal(err)
			}
		}
		got, ok, err := s.Mark("job")
		if err != nil || !ok || !got.Equal(t1.Truncate(time.Millisecond)) {
			t.Errorf("mark %v ok %v err %v, want %v", got, ok, err, t1.Truncate(time.Millisecond))
		}
		if err := s.SetMark("job", t1.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := s.Mark("job"); !got.Equal(t1.Add(time.Minute).Truncate(time.Millisecond)) {
			t.Errorf("mark %v after moving it forward", got)
		}
	})
}
