package console

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/procurement/gateway/model"
)

// Labels in Chinese, as the operators of procurement systems read them.
// A status or result is always shown with its code beside it (已出函
// issued), the word operators and the logs, metrics and API share.

var labels = map[string]map[string]string{
	"status": {
		string(model.StatusApplying): "申请中", string(model.StatusApplyRejected): "申请被拒",
		string(model.StatusProcessing): "办理中", string(model.StatusIssued): "已出函",
		string(model.StatusFailed): "办理失败", string(model.StatusCancelling): "注销中",
		string(model.StatusCancelled): "已注销", string(model.StatusSurrendered): "已退保",
	},
	"flag": {
		string(model.FlagStale): "超期未决", string(model.FlagApplyUnconfirmed): "申请未确认",
		string(model.FlagPullFailed): "文件下载失败",
	},
	"delivery": {
		model.DeliveryPending: "待投递", model.DeliveryDelivered: "已投递", model.DeliveryDead: "投递失败",
	},
	"result": { // of a callback
		model.CallbackAccepted: "已接受", model.CallbackDuplicate: "重复", model.CallbackLate: "迟到",
		model.CallbackRejected: "已拒绝",
	},
	"call": { // result of a call
		"ok": "成功", "unreachable": "无法连接", "unknown": "结果未知", "http_error": "HTTP 错误",
		"refused": "机构拒绝", "bad_answer": "应答无效", "invalid": "请求无效", "circuit_open": "熔断中",
	},
	"kind": { // of a callback
		"paystate": "支付通知", "applynotify": "出函通知", "release": "释放通知",
	},
	"endpoint": {
		"apply": "申请", "cost": "询价", "xmstate": "项目状态", "query": "进度查询", "pull": "获取保函",
		"cancel": "注销",
	},
	"source": {
		"event": "事件", "callback": "回调", "call": "调用", "action": "操作",
	},
	"event": {
		"apply": "申请", "pay": "支付", "refund": "退款", "applynotify": "出函通知", "query": "进度查询",
		"cancel": "注销", "release": "释放", "file": "保函文件", "stale": "超期未决", "pull_failed": "文件下载失败",
		"issued_incomplete": "出函信息不全", "issued_completed": "出函信息补全", "late_notice": "迟到通知",
		"bhno": "保函编号", "paystate": "支付通知",
	},
	"action": {
		"query": "向机构查询", "pull": "下载保函文件", "cancel": "注销保函", "retry_delivery": "重新投递",
		"retry_deliveries": "全部重新投递", "resolve_finding": "处理对账差异", "sign_in": "登录", "sign_out": "退出",
	},
	"actionResult": {
		model.ConsoleActionStarted: "进行中", "ok": "成功", "forbidden": "无权限", "conflict": "状态不允许",
		"not_found": "未找到", "invalid": "无效", "institution": "机构未正常应答", "unavailable": "存储不可用",
		"internal": "内部错误",
	},
	"finding": {
		"issued_unpaid": "已出函未付款", "paid_not_issued": "已付款未出函", "refund_while_issued": "保函有效期间退款",
		"premium_mismatch": "保费与付款不符",
	},
	"breaker": {
		"closed": "正常", "half-open": "试探中", "open": "熔断",
	},
	"role": {
		"viewer": "只读", "operator": "操作员",
	},
	"projectState": {
		"1": "正常（中标）", "2": "流标", "3": "终止", "4": "重新招标",
	},
	"payKind": {
		"1": "支付", "2": "退款",
	},
	"errcode": {
		"000000": "成功", "100001": "appKey 无效或来源不允许", "100002": "解密失败（密钥或加密参数不符）",
		"100003": "参数无效", "200001": "订单或保函未知", "200002": "与已存信息冲突", "500001": "存储不可用",
		"500002": "超过速率限制",
	},
	"body": {
		"not_kept": "未保存正文（超过 1 MiB，或未读取即拒绝）", "no_cipher": "无可用于解密的机构配置",
		"removed":      "正文已按保留期限删除（retention.raw_bodies）；回调记录及其 SHA-256、大小、结果仍保留",
		"not_envelope": "不是报文信封格式", "not_decrypted": "无法用该机构密钥解密", "not_json": "解密结果不是 JSON 对象",
	},
}

// errcodeList is the callback errcodes, for the filter's choices.
var errcodeList = []string{"100001", "100002", "100003", "200001", "200002", "500001", "500002"}

// label is the Chinese word for a code of a vocabulary, "" when none.
func label(vocab string, code any) string {
	return labels[vocab][fmt.Sprint(code)]
}

func (s *server) funcs() template.FuncMap {
	return template.FuncMap{
		"label": label,
		"time": func(t any) string {
			switch v := t.(type) {
			case time.Time:
				if v.IsZero() {
					return "—"
				}
				return v.In(s.Location).Format("2006-01-02 15:04:05")
			case *time.Time:
				if v == nil || v.IsZero() {
					return "—"
				}
				return v.In(s.Location).Format("2006-01-02 15:04:05")
			}
			return fmt.Sprint(t)
		},
		"ago": func(t any) string {
			switch v := t.(type) {
			case time.Time:
				return ago(time.Since(v))
			case *time.Time:
				if v != nil {
					return ago(time.Since(*v))
				}
			}
			return "从未"
		},
		"money": money,
		"bytes": func(n any) string {
			var v float64
			switch x := n.(type) {
			case int:
				v = float64(x)
			case int64:
				v = float64(x)
			}
			switch {
			case v < 1024:
				return fmt.Sprintf("%.0f B", v)
			case v < 1<<20:
				return fmt.Sprintf("%.1f KiB", v/1024)
			}
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		},
		"short": func(s string) string {
			if len(s) > 12 {
				return s[:12] + "…"
			}
			return s
		},
		// href builds a console URL with query parameters given as pairs,
		// the empty ones left out.
		"href": func(path string, kv ...string) string {
			q := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					q.Set(kv[i], kv[i+1])
				}
			}
			if len(q) == 0 {
				return path
			}
			return path + "?" + q.Encode()
		},
		"orderURL": orderURL,
		"zone":     func() string { return s.Location.String() },
		"tzOffset": func() string { return time.Now().In(s.Location).Format("UTC-07:00") },
		"count": func(m any, key any) int64 {
			switch v := m.(type) {
			case map[model.Status]int64:
				return v[key.(model.Status)]
			case map[model.Flag]int64:
				return v[key.(model.Flag)]
			case map[string]int64:
				return v[fmt.Sprint(key)]
			}
			return 0
		},
		"sum": func(m map[string]int64) int64 {
			var n int64
			for _, v := range m {
				n += v
			}
			return n
		},
		"join": strings.Join,
		"eq2":  func(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) },
	}
}

// money writes yuan with two decimals and thousands separators.
func money(d decimal.Decimal) string {
	s := d.StringFixed(2)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, _ := strings.Cut(s, ".")
	var b strings.Builder
	for i, r := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	out := b.String() + "." + frac
	if neg {
		out = "-" + out
	}
	return out
}

// ago says how long ago, roughly, in Chinese.
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "刚刚"
	case d < time.Hour:
		return fmt.Sprintf("%d 分钟前", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d 小时前", int(d.Hours()))
	}
	return fmt.Sprintf("%d 天前", int(d.Hours()/24))
}
