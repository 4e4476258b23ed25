package fill

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
)

// The made-up parties of a fill: pools of names combined by index, so that
// a bidder's name, code and account are the same each time its index comes
// up, without a table of them in memory.

var (
	cities = []string{"北京", "上海", "广州", "深圳", "杭州", "南京", "苏州", "成都", "武汉", "西安", "重庆", "天津",
		"长沙", "郑州", "济南", "青岛", "合肥", "福州", "厦门", "昆明", "南宁", "贵阳", "太原", "石家庄", "沈阳", "大连",
		"长春", "哈尔滨", "南昌", "兰州", "银川", "西宁"}
	marks = []string{"宏达", "建安", "中诚", "鼎盛", "华泰", "恒信", "远大", "永安", "正和", "同力", "天元", "金桥",
		"新城", "汇通", "联合", "东方", "盛世", "博远", "嘉禾", "润泽", "广厦", "安泰", "瑞丰", "信达"}
	trades = []string{"建设工程", "建筑安装", "市政工程", "路桥工程", "水利水电", "装饰工程", "园林绿化", "电力工程",
		"机电设备", "信息技术", "环境工程", "交通设施"}
	works = []string{"教学楼新建工程", "道路改造工程", "污水处理厂扩建", "安置房建设项目", "河道综合治理", "医院门诊楼工程",
		"体育中心建设", "产业园基础设施", "供水管网改造", "老旧小区改造", "桥梁加固工程", "智慧城市平台采购"}
	banks    = []string{"中国工商银行", "中国建设银行", "中国农业银行", "中国银行", "交通银行", "招商银行", "兴业银行", "浦发银行"}
	surnames = []string{"王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林"}
	given    = []string{"伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超"}
	lotNames = []string{"一标段", "二标段", "三标段"}
)

// The bidders a fill draws from.
const numApplicants = 60000

func applicantName(a int) string {
	return cities[a%len(cities)] + marks[(a/len(cities))%len(marks)] + trades[(a/7)%len(trades)] +
		"有限公司" + suffix(a/(len(cities)*len(marks)))
}

// suffix tells apart the bidders whose name parts repeat.
func suffix(n int) string {
	if n == 0 {
		return ""
	}
	return "(" + strconv.Itoa(n) + ")"
}

// applicantCode is an 18-character unified social credit code.
func applicantCode(a int) string { return fmt.Sprintf("91%06d%09dX", 110000+a%900, 100000000+a) }

func accountNo(a int) string {
	return fmt.Sprintf("6222%04d%011d", a%10000, int64(a)*7919%100000000000)
}

func tendererName(t int) string {
	return cities[t%len(cities)] + "市公共资源交易中心" + suffix(t/len(cities))
}

func tendererCode(t int) string { return fmt.Sprintf("12%06d%09dY", 110000+t%900, 200000000+t) }

func personName(n int) string {
	return surnames[n%len(surnames)] + given[(n/len(surnames))%len(given)]
}

// letter is a small well-formed one-page PDF, padded with a comment-free
// text stream to about size bytes: the guarantee file every filled order
// shares (the same content for all is enough to measure at size).
func letter(size int) []byte {
	var b bytes.Buffer
	var offsets []int
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	var text bytes.Buffer
	text.WriteString("BT /F1 14 Tf 72 770 Td (Letter of guarantee for a bid deposit - filled test data) Tj ET\n")
	for y := 740; text.Len() < size-900 && y > 60; y -= 14 {
		fmt.Fprintf(&text, "BT /F1 9 Tf 72 %d Td (The guarantor undertakes to pay the beneficiary on first demand up to the deposit amount.) Tj ET\n", y)
	}
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
	obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>")
	obj(fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", text.Len(), text.String()))
	obj("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

func sha256Hex(p []byte) string {
	h := sha256.Sum256(p)
	return hex.EncodeToString(h[:])
}
