package service

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/procurement/gateway/model"
	"github.com/procurement/gateway/wire"
)

// progress is what an institution said of an order's issuance, by
// applynotify or by queryurl; both go through applyProgress so that the
// lifecycle has one set of rules.
type progress struct {
	state       string // wire.NotifyProcessing, NotifyFailed, NotifyIssued
	guaranteeNo string
	remark      string
	source      string // "applynotify", "query"
	refID       *int64

	issuer   *model.IssuerDetails // applynotify carries the premium and issuer fields
	issuedAt time.Time
	file     []byte
	missing  []string
}

type progressResult struct {
	moved bool
	late  bool
	note  string
}

// applyProgress applies p to the order as the lifecycle table says (move,
// keep, late, refuse, complete). A notice that would move the order
// backwards is late: recorded as an event and acknowledged, and so is an
// issuance notice after the guarantee ended. An issuance told again that
// brings the file, the time or the bhno the first lacked completes the
// order. One that contradicts what is stored (another bhno, failed after
// issued) is refused with 200002 and changes nothing.
func (s *Service) applyProgress(tx model.Queries, o *model.Order, p progress) (progressResult, error) {
	ev := noticeEvent(p.state)
	r := next(o.Status, ev)
	switch r.act {
	case actKeep:
		return progressResult{}, nil
	case actLate:
		return s.late(tx, o, p)
	case actRefuse:
		return progressResult{}, refuse(wire.CodeConflict, "order %s is %s; it cannot become %s", o.OrderNo, o.Status, ev)
	case actComplete:
		return s.completeIssuance(tx, o, p)
	}
	switch r.to {
	case model.StatusProcessing:
		// The apply's answer was lost but the institution has the order.
		return s.move(tx, o, r.to, p, model.OrderChange{}.DueAt(s.now().Add(backoff(s.set.PollBackoff, 1))).
			Attempts(0).Flag(model.FlagNone))
	case model.StatusFailed:
		return s.move(tx, o, r.to, p, model.OrderChange{}.Remark(truncate(p.remark, 512)).NotDue().Flag(model.FlagNone))
	}
	// Issued.
	stored, err := s.storeFile(tx, o, p)
	if err != nil {
		return progressResult{}, err
	}
	moved, err := tx.RecordIssuance(o.OrderNo, o.Status, s.issuance(p, stored))
	if errors.Is(err, model.ErrDuplicate) {
		return progressResult{}, refuse(wire.CodeConflict, "bhno %s belongs to another order", p.guaranteeNo)
	}
	if err != nil {
		return progressResult{}, err
	}
	if !moved {
		return progressResult{}, errMovedMeanwhile(o)
	}
	if err := tx.AddEvent(moveEvent(o, r.to, p)); err != nil {
		return progressResult{}, err
	}
	if len(p.missing) > 0 {
		err = tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "issued_incomplete",
			Detail: "issuance notice lacked " + strings.Join(p.missing, ", ") + "; the pull job fetches the file", RefID: p.refID})
	}
	return progressResult{moved: true}, err
}

// completeIssuance takes an issuance told again of an order issued (or
// since cancelled or surrendered): it may bring the bhno a query could not
// tell, or the file or time the first notice lacked; anything else is a
// repeat, or late after the guarantee ended.
func (s *Service) completeIssuance(tx model.Queries, o *model.Order, p progress) (progressResult, error) {
	have := o.GuaranteeNo.String
	switch {
	case have == "" && p.guaranteeNo != "":
		// Issued by a query, which carries no bhno: now we learn it.
		stored, err := s.storeFile(tx, o, p)
		if err != nil {
			return progressResult{}, err
		}
		if _, err := tx.LearnGuaranteeNo(o.OrderNo, s.issuance(p, stored), o.Status != model.StatusIssued); err != nil {
			if errors.Is(err, model.ErrDuplicate) {
				return progressResult{}, refuse(wire.CodeConflict, "bhno %s belongs to another order", p.guaranteeNo)
			}
			return progressResult{}, err
		}
		return progressResult{moved: true}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
			Name: "bhno", Detail: "guarantee number " + p.guaranteeNo + " from " + p.source, RefID: p.refID})
	case p.guaranteeNo != "" && p.guaranteeNo != have:
		return progressResult{}, refuse(wire.CodeConflict, "order %s was issued as bhno %s, not %s", o.OrderNo, have, p.guaranteeNo)
	}
	// The issuance told again: it may bring what the first notice lacked
	// (docs/decisions.md §6), and nothing else changes.
	stored, err := s.storeFile(tx, o, p)
	if err != nil {
		return progressResult{}, err
	}
	fill := model.OrderChange{}
	var filled []string
	if stored && o.FilePending {
		fill = fill.FilePending(false).NotDue()
		filled = append(filled, "bhfile")
	}
	if p.issuer != nil && o.IssuedAt == nil && !p.issuedAt.IsZero() {
		fill = fill.IssuedAt(p.issuedAt)
		filled = append(filled, "bhcretime")
	}
	if len(filled) > 0 {
		if _, err := tx.UpdateOrder(o.OrderNo, fill, model.OrderGuard{}); err != nil {
			return progressResult{}, err
		}
		return progressResult{moved: true}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
			Name: "issued_completed", Detail: "issuance notice brought " + strings.Join(filled, ", "), RefID: p.refID})
	}
	if p.issuer != nil && o.Status != model.StatusIssued {
		// An issuance notice after the guarantee ended.
		return s.late(tx, o, p)
	}
	return progressResult{}, nil
}

// issuance is what p says of an issued guarantee, for the order's row.
func (s *Service) issuance(p progress, fileStored bool) model.Issuance {
	return model.Issuance{GuaranteeNo: p.guaranteeNo, Remark: truncate(p.remark, 512), Issuer: p.issuer,
		IssuedAt: p.issuedAt, FileStored: fileStored, Now: s.now()}
}

// moveEvent is the event of a transition that p made.
func moveEvent(o *model.Order, to model.Status, p progress) *model.Event {
	return &model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: p.source, FromStatus: string(o.Status),
		ToStatus: string(to), RefID: p.refID, Detail: truncate(p.remark, 512)}
}

// move makes one conditional transition and appends its event.
func (s *Service) move(tx model.Queries, o *model.Order, to model.Status, p progress, c model.OrderChange) (progressResult, error) {
	moved, err := tx.MoveOrder(o.OrderNo, []model.Status{o.Status}, to, c)
	if err != nil {
		return progressResult{}, err
	}
	if !moved {
		return progressResult{}, errMovedMeanwhile(o)
	}
	return progressResult{moved: true}, tx.AddEvent(moveEvent(o, to, p))
}

// errMovedMeanwhile: another writer moved the order between our read and
// our update; the caller's transaction is retried by the sender or the
// next poll.
func errMovedMeanwhile(o *model.Order) error {
	return refuse(wire.CodeUnavailable, "order %s changed concurrently, retry", o.OrderNo)
}

// late records a notice that would move the order backwards.
func (s *Service) late(tx model.Queries, o *model.Order, p progress) (progressResult, error) {
	note := fmt.Sprintf("late %s notice (state %s) ignored: order is %s", p.source, p.state, o.Status)
	return progressResult{late: true, note: note}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
		Name: "late_notice", Detail: note, RefID: p.refID})
}

// storeFile keeps the PDF of p, once per order; it reports whether the
// order now has its file.
func (s *Service) storeFile(tx model.Queries, o *model.Order, p progress) (bool, error) {
	if p.file == nil {
		if _, err := tx.FileInfo(o.OrderNo); err == nil {
			return true, nil
		} else if !errors.Is(err, model.ErrNotFound) {
			return false, err
		}
		return false, nil
	}
	guaranteeNo := p.guaranteeNo
	if guaranteeNo == "" {
		guaranteeNo = o.GuaranteeNo.String
	}
	err := tx.InsertFile(fileRow(o.OrderNo, guaranteeNo, p.source, p.file))
	if err != nil && !errors.Is(err, model.ErrDuplicate) {
		return false, err
	}
	return true, nil
}

func fileRow(orderNo, guaranteeNo, source string, pdf []byte) *model.GuaranteeFile {
	sum := sha256.Sum256(pdf)
	return &model.GuaranteeFile{OrderNo: orderNo, GuaranteeNo: guaranteeNo, Sha256: hex.EncodeToString(sum[:]),
		Size: int64(len(pdf)), Source: source, Content: pdf}
}
