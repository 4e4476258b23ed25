package service

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopspring/decimal"

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
	source      string // "applynotify", "query", "apply"
	refID       *int64

	withDetails   bool // applynotify carries the premium and issuer fields
	rate, premium decimal.Decimal
	issuerName    string
	issuerAddress string
	issuerPhone   string
	issuedAt      time.Time
	file          []byte
	missing       []string
}

type progressResult struct {
	moved bool
	late  bool
	note  string
}

// applyProgress moves the order as p says, never backwards. A notice that
// would move it backwards (processing after issued) is late: recorded as an
// event and acknowledged, and so is an issuance notice after the guarantee
// ended. An issuance told again that brings the file or the time the first
// notice lacked completes the order. One that contradicts what is stored
// (another bhno, failed after issued) is refused with 200002 and changes
// nothing.
func (s *Service) applyProgress(tx model.Tx, o *model.Order, p progress) (progressResult, error) {
	now := s.now()
	switch p.state {
	case wire.NotifyProcessing:
		switch o.Status {
		case model.StatusApplying:
			// The apply's answer was lost but the institution has the order.
			next := now.Add(backoff(s.set.PollBackoff, 1))
			return s.move(tx, o, model.StatusProcessing, p, model.Changes{"next_check_at": next, "check_attempts": 0, "flag": ""})
		case model.StatusProcessing:
			return progressResult{}, nil
		default:
			return s.late(tx, o, p)
		}

	case wire.NotifyFailed:
		switch o.Status {
		case model.StatusApplying, model.StatusProcessing:
			return s.move(tx, o, model.StatusFailed, p, model.Changes{"remark": truncate(p.remark, 512), "next_check_at": nil, "flag": ""})
		case model.StatusFailed:
			return progressResult{}, nil
		default:
			return progressResult{}, refuse(wire.CodeConflict, "order %s is %s; it cannot become failed", o.OrderNo, o.Status)
		}

	case wire.NotifyIssued:
		stored, err := s.storeFile(tx, o, p)
		if err != nil {
			return progressResult{}, err
		}
		set := issuedChanges(p, now, stored)
		switch o.Status {
		case model.StatusApplying, model.StatusProcessing:
			res, err := s.move(tx, o, model.StatusIssued, p, set)
			if errors.Is(err, model.ErrDuplicate) {
				return res, refuse(wire.CodeConflict, "bhno %s belongs to another order", p.guaranteeNo)
			}
			if len(p.missing) > 0 && err == nil {
				err = tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote, Name: "issued_incomplete",
					Detail: "issuance notice lacked " + strings.Join(p.missing, ", ") + "; the pull job fetches the file", RefID: p.refID})
			}
			return res, err
		case model.StatusIssued, model.StatusCancelling, model.StatusCancelled, model.StatusSurrendered:
			have := o.BHNo()
			switch {
			case have == "" && p.guaranteeNo != "":
				// Issued by a query, which carries no bhno: now we learn it.
				if o.Status != model.StatusIssued {
					delete(set, "next_check_at") // nothing to pull for an ended guarantee
				}
				if _, err := tx.UpdateOrder(o.OrderNo, set, model.Changes{"guarantee_no": nil}); err != nil {
					if errors.Is(err, model.ErrDuplicate) {
						return progressResult{}, refuse(wire.CodeConflict, "bhno %s belongs to another order", p.guaranteeNo)
					}
					return progressResult{}, err
				}
				return progressResult{moved: true}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
					Name: "bhno", Detail: "guarantee number " + p.guaranteeNo + " from " + p.source, RefID: p.refID})
			case p.guaranteeNo == "" || p.guaranteeNo == have:
				// The issuance told again: it may bring what the first
				// notice lacked (DECISIONS.md §6), and nothing else changes.
				fill := model.Changes{}
				var filled []string
				if stored && o.FilePending {
					fill["file_pending"] = false
					filled = append(filled, "bhfile")
				}
				if p.withDetails && o.IssuedAt == nil && !p.issuedAt.IsZero() {
					fill["issued_at"] = p.issuedAt
					filled = append(filled, "bhcretime")
				}
				if len(fill) > 0 {
					if _, err := tx.UpdateOrder(o.OrderNo, fill, nil); err != nil {
						return progressResult{}, err
					}
					return progressResult{moved: true}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
						Name: "issued_completed", Detail: "issuance notice brought " + strings.Join(filled, ", "), RefID: p.refID})
				}
				if p.withDetails && o.Status != model.StatusIssued {
					// An issuance notice after the guarantee ended.
					return s.late(tx, o, p)
				}
				return progressResult{}, nil
			default:
				return progressResult{}, refuse(wire.CodeConflict, "order %s was issued as bhno %s, not %s", o.OrderNo, have, p.guaranteeNo)
			}
		default:
			return progressResult{}, refuse(wire.CodeConflict, "order %s is %s; it cannot become issued", o.OrderNo, o.Status)
		}
	}
	return progressResult{}, fmt.Errorf("unknown state %q", p.state)
}

// issuedChanges are the columns an issuance sets: what p says, the file
// pending unless stored, and the order due at once for the next step (the
// pull job when the file is missing).
func issuedChanges(p progress, now time.Time, stored bool) model.Changes {
	set := model.Changes{"next_check_at": now, "check_attempts": 0, "flag": "", "file_pending": !stored}
	if p.guaranteeNo != "" {
		set["guarantee_no"] = p.guaranteeNo
	}
	if p.remark != "" {
		set["remark"] = truncate(p.remark, 512)
	}
	if p.withDetails {
		set["premium_rate"], set["premium"] = p.rate, p.premium
		set["issuer_name"], set["issuer_address"], set["issuer_phone"] = p.issuerName, p.issuerAddress, p.issuerPhone
	}
	if !p.issuedAt.IsZero() {
		set["issued_at"] = p.issuedAt
	}
	return set
}

// moveEvent is the event of a transition that p made.
func moveEvent(o *model.Order, to model.Status, p progress) *model.Event {
	return &model.Event{OrderNo: o.OrderNo, Kind: model.EventStatus, Name: p.source, FromStatus: string(o.Status),
		ToStatus: string(to), RefID: p.refID, Detail: truncate(p.remark, 512)}
}

// move makes one conditional transition and appends its event.
func (s *Service) move(tx model.Tx, o *model.Order, to model.Status, p progress, set model.Changes) (progressResult, error) {
	moved, err := tx.MoveOrder(o.OrderNo, []model.Status{o.Status}, to, set)
	if err != nil {
		return progressResult{}, err
	}
	if !moved {
		// Another writer moved it between our read and this update; the
		// caller's transaction is retried by the sender or the next poll.
		return progressResult{}, refuse(wire.CodeUnavailable, "order %s changed concurrently, retry", o.OrderNo)
	}
	return progressResult{moved: true}, tx.AddEvent(moveEvent(o, to, p))
}

// late records a notice that would move the order backwards.
func (s *Service) late(tx model.Tx, o *model.Order, p progress) (progressResult, error) {
	note := fmt.Sprintf("late %s notice (state %s) ignored: order is %s", p.source, p.state, o.Status)
	return progressResult{late: true, note: note}, tx.AddEvent(&model.Event{OrderNo: o.OrderNo, Kind: model.EventNote,
		Name: "late_notice", Detail: note, RefID: p.refID})
}

// storeFile keeps the PDF of p, once per order; it reports whether the
// order now has its file.
func (s *Service) storeFile(tx model.Tx, o *model.Order, p progress) (bool, error) {
	if p.file == nil {
		if _, err := tx.FileInfo(o.OrderNo); err == nil {
			return true, nil
		} else if !errors.Is(err, model.ErrNotFound) {
			return false, err
		}
		return false, nil
	}
	bhno := p.guaranteeNo
	if bhno == "" {
		bhno = o.BHNo()
	}
	err := tx.InsertFile(fileRow(o.OrderNo, bhno, p.source, p.file))
	if err != nil && !errors.Is(err, model.ErrDuplicate) {
		return false, err
	}
	return true, nil
}

func fileRow(orderNo, bhno, source string, pdf []byte) *model.GuaranteeFile {
	sum := sha256.Sum256(pdf)
	return &model.GuaranteeFile{OrderNo: orderNo, GuaranteeNo: bhno, Sha256: hex.EncodeToString(sum[:]),
		Size: int64(len(pdf)), Source: source, Content: pdf}
}
