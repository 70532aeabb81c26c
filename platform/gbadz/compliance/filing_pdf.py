"""The filing package as a bilingual PDF: the annex a filing officer attaches to a filing.

When an exporter files a GBA standard contract (Mainland-Hong Kong or Mainland-Macao) or a
national standard contract (SCC) for outbound personal information, the filing needs an annex
describing the transfer: the parties, purposes, categories and number of individuals, storage,
onward recipients, the PIPIA and who approved it. ``render_pdf`` turns a
``gbadz-filing-package/1`` document into that annex, every label in Simplified Chinese and
English so that the Guangdong office and a Hong Kong or Macao counterparty read the same page.

Chinese text needs a CJK font embedded in the file: Debian's Noto Sans CJK (package
``fonts-noto-cjk``, installed by ``make setup``) is read from disk and fpdf2 embeds only the
glyphs used, so the PDF is self-contained and small and nothing is downloaded. Values are laid
out as label/value rows that wrap and flow across pages whatever their length. The output is a
pure function of the package: the PDF's creation date is the package's ``generated_at``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, TextMode, XPos, YPos
from fpdf.util import Padding

FONT_FILE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
#: The collection's faces are JP, KR, SC, TC, HK (then the Mono faces): 2 is Simplified Chinese.
FONT_FACE = 2
FONT_PACKAGE = "fonts-noto-cjk"
FONT = "NotoSansCJKSC"

TITLE_ZH = "个人信息出境备案附件"
TITLE_EN = "Filing annex for outbound transfer of personal information"
MISSING = "—"
NONE_LISTED = "无 None"
LABEL_WIDTH = 52.0  # mm; the value column takes the rest of the line
GUTTER = 4.0
LINE = 5.0  # mm per line of 9-10 pt text
GREY = (90, 90, 90)
BLACK = (0, 0, 0)
BAND = (232, 236, 242)

MECHANISM_NAMES: dict[str, str] = {
    "GBA_SC_HK": "粤港澳大湾区（内地、香港）个人信息跨境流动标准合同 / GBA Standard Contract (Mainland–Hong Kong)",
    "GBA_SC_MO": "粤港澳大湾区（内地、澳门）个人信息跨境流动标准合同 / GBA Standard Contract (Mainland–Macao)",
    "SCC": "个人信息出境标准合同 / Standard Contract for Outbound Transfer of Personal Information",
    "NATIONAL_SCC": "个人信息出境标准合同 / Standard Contract for Outbound Transfer of Personal Information",
}
APPROVER_STEPS: dict[str, str] = {
    "provider": "数据提供方审批 Provider approval",
    "compliance": "合规审批 Compliance approval",
}

#: The label/value rows one section prints for one transfer.
Rows = list[tuple[str, object]]


def font_path() -> Path:
    """The CJK font file the annex embeds; a clear error naming the Debian package when it is absent."""
    if not FONT_FILE.is_file():
        raise RuntimeError(
            f"CJK font {FONT_FILE} not found: install the Debian package {FONT_PACKAGE} "
            f"(apt-get install {FONT_PACKAGE}; `make setup` does)"
        )
    return FONT_FILE


class _Annex(FPDF):
    """A4 pages whose footer names the contract and numbers the page in both languages."""

    def __init__(self, reference: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.reference = reference

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(*GREY)
        self.cell(self.epw / 2, 5, self.reference, align=Align.L)
        self.cell(self.epw / 2, 5, f"第 {self.page_no()} 页 / Page {self.page_no()}", align=Align.R)


def render_pdf(package: Mapping[str, Any]) -> bytes:
    """The filing package ``package`` (format ``gbadz-filing-package/1``) as a bilingual A4 PDF."""
    mechanism = _mapping(package.get("mechanism"))
    pdf = _new_document(package, _text(mechanism.get("reference")))
    _title(pdf, package, mechanism)
    _parties(pdf, package)
    transfers = [_mapping(transfer) for transfer in package.get("transfers") or []]
    _per_transfer(pdf, 2, "出境目的", "Purposes", transfers, _purpose_rows)
    _per_transfer(pdf, 3, "个人信息种类", "Categories of personal information", transfers, _category_rows)
    _per_transfer(pdf, 4, "数量", "Number of individuals", transfers, _number_rows)
    _per_transfer(pdf, 5, "存储地点与期限", "Storage location and period", transfers, _storage_rows)
    _per_transfer(pdf, 6, "再转移", "Onward recipients", transfers, _onward_rows)
    _pipia(pdf, _mapping(package.get("pipia")))
    _filing(pdf, mechanism)
    _determination(pdf, _mapping(package.get("determination")))
    return bytes(pdf.output())


def _new_document(package: Mapping[str, Any], reference: str) -> _Annex:
    pdf = _Annex(f"{TITLE_ZH} Filing annex · {reference}")
    pdf.add_font(FONT, "", font_path(), collection_font_number=FONT_FACE)
    pdf.set_margins(left=18, top=16, right=18)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_title(f"{TITLE_ZH} / {TITLE_EN}")
    pdf.set_lang("zh-CN")
    pdf.set_creator("gbadz")
    generated = _instant(package.get("generated_at"))
    if generated is not None:
        pdf.set_creation_date(generated)
    pdf.add_page()
    return pdf


# --- blocks --------------------------------------------------------------------------------


def _title(pdf: FPDF, package: Mapping[str, Any], mechanism: Mapping[str, Any]) -> None:
    _emphasised(pdf, TITLE_ZH, 16)
    _emphasised(pdf, TITLE_EN, 12)
    pdf.ln(2)
    kind, variant = _text(mechanism.get("kind")), _text(mechanism.get("variant"))
    name = MECHANISM_NAMES.get(variant) or MECHANISM_NAMES.get(kind)
    _field(pdf, "机制 Mechanism", f"{kind} / {variant}" + (f"\n{name}" if name else ""))
    _field(pdf, "合同编号 Contract reference", mechanism.get("reference"))
    _field(pdf, "生成时间 Generated at", package.get("generated_at"))
    _field(pdf, "格式 Format", package.get("format"))


def _parties(pdf: FPDF, package: Mapping[str, Any]) -> None:
    _heading(pdf, 1, "合同当事方", "Parties")
    for role, key in (
        ("个人信息处理者（出境方） Exporter", "exporter"),
        ("境外接收方 Recipient", "recipient"),
    ):
        party = _mapping(package.get(key))
        _subheading(pdf, role)
        _field(pdf, "名称 Name", party.get("name"))
        _field(pdf, "登记号 Registration no.", party.get("registration_no"))
        _field(pdf, "法域 Jurisdiction", _jurisdiction(party))
        _field(pdf, "联系人 Contact", party.get("contact"))


def _per_transfer(
    pdf: FPDF,
    number: int,
    zh: str,
    en: str,
    transfers: list[Mapping[str, Any]],
    rows: Callable[[Mapping[str, Any]], Rows],
) -> None:
    """One section that repeats its rows for each transfer under the transfer's dataset."""
    _heading(pdf, number, zh, en)
    if not transfers:
        _field(pdf, "数据集 Datasets", NONE_LISTED)
    for index, transfer in enumerate(transfers, start=1):
        title, dataset = _text(transfer.get("dataset_title")), _text(transfer.get("dataset_id"))
        _subheading(pdf, f"数据集 Dataset {index}/{len(transfers)}: {title} ({dataset})")
        for label, value in rows(transfer):
            _field(pdf, label, value)


def _purpose_rows(transfer: Mapping[str, Any]) -> Rows:
    return [
        ("目的代码 Purpose code", transfer.get("purpose_code")),
        ("出境目的 Purpose", transfer.get("purpose_text")),
        ("授权编号 Grant", transfer.get("grant_id")),
    ]


def _category_rows(transfer: Mapping[str, Any]) -> Rows:
    return [
        ("个人信息种类 Personal information categories", transfer.get("pi_categories")),
        ("敏感个人信息种类 Sensitive personal information categories", transfer.get("spi_categories")),
        ("字段 Columns", transfer.get("columns")),
    ]


def _number_rows(transfer: Mapping[str, Any]) -> Rows:
    return [
        ("个人信息主体数量 Individuals", transfer.get("n_individuals")),
        (
            "敏感个人信息主体数量 Individuals with sensitive personal information",
            transfer.get("n_spi_individuals"),
        ),
    ]


def _storage_rows(transfer: Mapping[str, Any]) -> Rows:
    granted, expires = _text(transfer.get("granted_at")), _text(transfer.get("expires_at"))
    return [
        ("存储地点 Storage location", transfer.get("storage_location")),
        ("保存期限 Retention period", transfer.get("retention")),
        ("授权有效期 Access granted", f"{granted} 至 to {expires}"),
    ]


def _onward_rows(transfer: Mapping[str, Any]) -> Rows:
    return [
        ("再转移接收方 Onward recipients", transfer.get("onward_recipients")),
        ("再转移条件 Onward transfer terms", transfer.get("onward_transfer")),
    ]


def _pipia(pdf: FPDF, pipia: Mapping[str, Any]) -> None:
    _heading(pdf, 7, "个人信息保护影响评估", "PIPIA summary")
    _field(pdf, "评估编号 Reference", pipia.get("reference"))
    _field(pdf, "评估日期 Date", pipia.get("date"))
    _field(pdf, "报告保存至 Retained until", pipia.get("retain_until"))
    _field(pdf, "评估摘要 Summary", pipia.get("summary"))


def _filing(pdf: FPDF, mechanism: Mapping[str, Any]) -> None:
    _heading(pdf, 8, "备案", "Filing")
    _field(pdf, "合同编号 Reference", mechanism.get("reference"))
    _field(pdf, "备案机关 Authority", mechanism.get("authority"))
    _field(pdf, "生效日期 Effective date", mechanism.get("effective_date"))
    _field(pdf, "备案日期 Filing date", mechanism.get("filing_date"))
    _field(pdf, "备案期限 Filing due", mechanism.get("filing_due"))


def _determination(pdf: FPDF, determination: Mapping[str, Any]) -> None:
    _heading(pdf, 9, "审批", "Determination and approvers")
    _field(pdf, "判定结果 Outcome", determination.get("outcome"))
    _field(pdf, "规则 Rule", determination.get("rule_id"))
    _field(pdf, "法律依据 Legal basis", determination.get("legal_basis"))
    approvers = [_mapping(approver) for approver in determination.get("approvers") or []]
    if not approvers:
        _field(pdf, "审批人 Approvers", NONE_LISTED)
    for approver in approvers:
        step = _text(approver.get("step"))
        signed = f"{_text(approver.get('by'))} · {_text(approver.get('at'))}"
        note = approver.get("note")
        _field(pdf, APPROVER_STEPS.get(step, step), signed + (f"\n{note}" if note else ""))


# --- drawing -------------------------------------------------------------------------------


def _heading(pdf: FPDF, number: int, zh: str, en: str) -> None:
    """A numbered section heading on a shaded band, kept on the page of its first row."""
    _keep(pdf, 9 + 2 * LINE)
    pdf.ln(3)
    pdf.set_fill_color(*BAND)
    _emphasised(pdf, f"{number}  {zh} {en}", 11, fill=True)
    pdf.ln(1.5)


def _subheading(pdf: FPDF, text: str) -> None:
    _keep(pdf, 7 + LINE)
    pdf.ln(1)
    _emphasised(pdf, text, 10)
    pdf.ln(0.5)


def _emphasised(pdf: FPDF, text: str, size: float, *, fill: bool = False) -> None:
    """Text in a heavier weight: the font has one face, so the glyphs are also stroked."""
    pdf.set_font(FONT, size=size)
    pdf.set_text_color(*BLACK)
    with pdf.local_context(text_mode=TextMode.FILL_STROKE, line_width=size / 60, draw_color=BLACK):
        pdf.multi_cell(
            0,
            size * 0.55,
            text,
            align=Align.L,
            fill=fill,
            padding=Padding(1, 1.5, 1, 1.5),
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )


def _field(pdf: FPDF, label: str, value: object) -> None:
    """A label/value row; a row longer than the page flows onto the next ones in its column."""
    value_width = pdf.epw - LABEL_WIDTH - GUTTER
    labels = _lines(pdf, LABEL_WIDTH, label, 9)
    values = _lines(pdf, value_width, _text(value), 10)
    height = max(len(labels), len(values)) * LINE
    _keep(pdf, height if height <= pdf.eph else len(labels) * LINE)
    top, page = pdf.y, pdf.page
    _draw(pdf, LABEL_WIDTH, labels, 9, GREY)
    label_bottom = pdf.y
    pdf.set_xy(pdf.l_margin + LABEL_WIDTH + GUTTER, top)
    _draw(pdf, value_width, values, 10, BLACK)
    if pdf.page == page:
        pdf.set_y(max(pdf.y, label_bottom))
    pdf.ln(1)


def _lines(pdf: FPDF, width: float, text: str, size: float) -> list[str]:
    """``text`` broken into the lines it takes in a column ``width`` mm wide, at ``size`` pt."""
    pdf.set_font(FONT, size=size)
    lines = pdf.multi_cell(width, LINE, text, align=Align.L, dry_run=True, output=MethodReturnValue.LINES)
    return cast(list[str], lines)


def _draw(pdf: FPDF, width: float, lines: list[str], size: float, color: tuple[int, int, int]) -> None:
    """Lines one under the other from the current position; a page break keeps the column."""
    pdf.set_font(FONT, size=size)
    pdf.set_text_color(*color)
    for line in lines:
        pdf.cell(width, LINE, line, align=Align.L, new_x=XPos.LEFT, new_y=YPos.NEXT)


def _keep(pdf: FPDF, height: float) -> None:
    """Start a new page unless ``height`` more millimetres fit on this one."""
    if pdf.will_page_break(height):
        pdf.add_page()


# --- values --------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A value as printed: missing is "—", an empty list is "none", counts have thousands separators."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(item) for item in value) if value else NONE_LISTED
    return str(value)


def _jurisdiction(party: Mapping[str, Any]) -> str:
    code, name = party.get("jurisdiction"), party.get("jurisdiction_name")
    if code and name:
        return f"{name} ({code})"
    return _text(name or code)


def _instant(value: object) -> datetime | None:
    """``generated_at`` as a datetime, or None when it is absent or not ISO 8601."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
