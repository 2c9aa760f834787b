// Garda desk: plain JavaScript, no build step. Talks to the ordinary API with the session
// cookie; writes carry the session's CSRF token in X-Garda-CSRF. No token is ever kept here.
"use strict";

const I18N = {
  id: {
    skip: "Langsung ke isi", desk: "Meja Atnaker", nav_queue: "Antrean", nav_board: "Papan pusat",
    signout: "Keluar", signin_title: "Masuk ke meja Atnaker",
    signin_help: "Tempel token pos atau pusat Anda. Token ditukar sekali dengan sesi; token tidak disimpan di browser.",
    token: "Token", actor: "ID petugas", signin: "Masuk",
    err_token: "Token tidak dikenal atau sudah dicabut.", err_actor: "Isi ID petugas (maks. 64 karakter).",
    err_origin: "Permintaan dari situs lain ditolak.",
    notfound_title: "Kasus tidak ditemukan", notfound_help: "Kasus ini tidak ada atau bukan milik pos Anda.",
    back_queue: "Kembali ke antrean", queue_title: "Antrean kasus", search: "Cari kasus atau pekerja",
    status: "Status", severity: "Tingkat", kind: "Jenis", category: "Kategori", post: "Pos",
    queue_caption: "Kasus terbuka, paling mendesak dulu", col_due: "Tenggat", col_case: "Kasus",
    col_worker: "Pekerja", col_place: "Negara / wilayah", col_level: "Eskalasi", col_reports: "Laporan",
    queue_empty: "Tidak ada kasus yang cocok.", more: "Muat lebih banyak", actions: "Tindakan",
    acknowledge: "Akui", reopen: "Buka kembali", note: "Catatan", add_note: "Tambah catatan",
    refer_to: "Rujuk ke (organisasi)", refer: "Rujuk", resolution: "Penyelesaian", resolve: "Selesaikan",
    timeline: "Linimasa", worker: "Pekerja", notified: "Siapa yang diberi tahu",
    board_title: "Papan pusat", board_caption: "Satu baris per pos", open: "Terbuka",
    overdue: "Lewat tenggat", level1: "Eskalasi 1", level2: "Eskalasi 2",
    median_ack: "Median waktu akui (30 hari)", chart: "Kasus baru per hari",
    board_help: "Klik sebuah pos untuk membuka antreannya.",
    all: "Semua", active: "Belum selesai", live_on: "● Langsung", live_poll: "○ Memuat ulang berkala",
    cases_n: (n) => `${n} kasus`, more_n: (n) => `${n}+ kasus`,
    left: "lagi", late: "terlambat", acked: "Diakui", resolved_at: "Selesai",
    resolve_by: "selesaikan sebelum", post_time: "waktu pos", level: "Level",
    opened: "Dibuka", reports: "Laporan", ack_due: "Batas akui", resolve_due: "Batas selesai",
    escalated_to: "Dieskalasi ke", routing: "Catatan rute", reasons: "Alasan non-prosedural",
    state: "Status pekerja", in_crisis: "Dalam krisis", yes: "ya", no: "tidak",
    departed: "Berangkat", arrived: "Tiba", returned: "Pulang", contract_end: "Kontrak berakhir",
    coverage: "Masa jaminan", claims: "Klaim", no_claims: "Tidak ada klaim.",
    no_deliveries: "Belum ada catatan notifikasi untuk kasus ini.",
    d_notified: "Diberi tahu", d_delivered: "Diterima", d_acked: "Diakui lewat tautan",
    d_attempts: "Percobaan", d_last: "jawaban terakhir", d_alerts: "Isi", d_why: "Alasan", d_at: "Waktu",
    d_in: "setelah", d_by: "oleh", d_not_yet: "belum", d_error: "Galat terakhir",
    d_case_acked: "Kasus diakui (meja atau API)", d_not_sent: "Tidak dikirim",
    dst: { pending: "menunggu", delivered: "terkirim", failed: "gagal", abandoned: "dihentikan" },
    disp: { held: "ditahan", silenced: "dibisukan", queued: "antre" },
    sent: "Terkirim; menunggu diterapkan…", applied: "Diterapkan.", refused: "Ditolak",
    u: { d: "h", h: "j", m: "m", s: "d" }, lang_switch: "Switch to English", lang_btn: "EN",
    st: { open: "terbuka", acknowledged: "diakui", reopened: "dibuka kembali", resolved: "selesai" },
    sev: { critical: "kritis", high: "tinggi", medium: "sedang", low: "rendah" },
    kinds: { protection: "perlindungan", non_procedural_departure: "keberangkatan non-prosedural",
      coverage_gap: "celah jaminan", claim_dispute: "sengketa klaim",
      reintegration: "reintegrasi", preventive_visit: "kunjungan pencegahan" },
    tl: { "garda.case.opened": "Kasus dibuka", "garda.case.report-attached": "Laporan ditambahkan",
      "garda.case.escalated": "Dieskalasi", "garda.case.acknowledged": "Diakui",
      "garda.case.note-added": "Catatan", "garda.case.referred": "Dirujuk",
      "garda.case.resolved": "Diselesaikan", "garda.case.reopened": "Dibuka kembali",
      "garda.case.updated": "Diperbarui", "garda.case.assigned": "Ditugaskan",
      "garda.alert.escalated": "Peringatan eskalasi", "garda.alert.referral-declined": "Rujukan ditolak",
      "garda.case.referral-accepted": "Rujukan diterima", "garda.case.referral-declined": "Rujukan ditolak",
      "garda.case.referral-lapsed": "Rujukan tidak dijawab", "garda.case.claim-linked": "Klaim ditautkan",
      "garda.case.jkm-claim-missing": "Klaim JKM belum diajukan" },
  },
  en: {
    skip: "Skip to content", desk: "Atnaker desk", nav_queue: "Queue", nav_board: "HQ board",
    signout: "Sign out", signin_title: "Sign in to the Atnaker desk",
    signin_help: "Paste your post or headquarters token. It is exchanged once for a session and never kept in the browser.",
    token: "Token", actor: "Officer id", signin: "Sign in",
    err_token: "Unknown or revoked token.", err_actor: "Enter your officer id (64 characters at most).",
    err_origin: "Requests from another site are refused.",
    notfound_title: "Case not found", notfound_help: "This case does not exist or is not your post's.",
    back_queue: "Back to the queue", queue_title: "Case queue", search: "Search case or worker",
    status: "Status", severity: "Severity", kind: "Kind", category: "Category", post: "Post",
    queue_caption: "Open cases, most urgent first", col_due: "Deadline", col_case: "Case",
    col_worker: "Worker", col_place: "Country / region", col_level: "Escalation", col_reports: "Reports",
    queue_empty: "No matching cases.", more: "Load more", actions: "Actions",
    acknowledge: "Acknowledge", reopen: "Reopen", note: "Note", add_note: "Add note",
    refer_to: "Refer to (organisation)", refer: "Refer", resolution: "Resolution", resolve: "Resolve",
    timeline: "Timeline", worker: "Worker", notified: "Who was notified",
    board_title: "Headquarters board", board_caption: "One row per post", open: "Open",
    overdue: "Overdue", level1: "Escalated 1", level2: "Escalated 2",
    median_ack: "Median time to acknowledge (30 days)", chart: "New cases per day",
    board_help: "Click a post to open its queue.",
    all: "All", active: "Not resolved", live_on: "● Live", live_poll: "○ Polling",
    cases_n: (n) => `${n} cases`, more_n: (n) => `${n}+ cases`,
    left: "left", late: "overdue", acked: "Acknowledged", resolved_at: "Resolved",
    resolve_by: "resolve by", post_time: "post time", level: "Level",
    opened: "Opened", reports: "Reports", ack_due: "Acknowledge by", resolve_due: "Resolve by",
    escalated_to: "Escalated to", routing: "Routing note", reasons: "Non-procedural reasons",
    state: "Worker state", in_crisis: "In crisis", yes: "yes", no: "no",
    departed: "Departed", arrived: "Arrived", returned: "Returned", contract_end: "Contract ends",
    coverage: "Coverage", claims: "Claims", no_claims: "No claims.",
    no_deliveries: "No notification records for this case yet.",
    d_notified: "Notified", d_delivered: "Delivered", d_acked: "Acknowledged from the link",
    d_attempts: "Attempts", d_last: "last answer", d_alerts: "About", d_why: "Why", d_at: "When",
    d_in: "after", d_by: "by", d_not_yet: "not yet", d_error: "Last error",
    d_case_acked: "Case acknowledged (desk or API)", d_not_sent: "Not sent",
    dst: { pending: "pending", delivered: "delivered", failed: "failed", abandoned: "abandoned" },
    disp: { held: "held", silenced: "silenced", queued: "queued" },
    sent: "Sent; waiting for it to apply…", applied: "Applied.", refused: "Refused",
    u: { d: "d", h: "h", m: "m", s: "s" }, lang_switch: "Ganti ke Bahasa Indonesia", lang_btn: "ID",
    st: { open: "open", acknowledged: "acknowledged", reopened: "reopened", resolved: "resolved" },
    sev: { critical: "critical", high: "high", medium: "medium", low: "low" },
    kinds: { protection: "protection", non_procedural_departure: "non-procedural departure",
      coverage_gap: "coverage gap", claim_dispute: "claim dispute",
      reintegration: "reintegration", preventive_visit: "preventive visit" },
    tl: { "garda.case.opened": "Case opened", "garda.case.report-attached": "Report attached",
      "garda.case.escalated": "Escalated", "garda.case.acknowledged": "Acknowledged",
      "garda.case.note-added": "Note", "garda.case.referred": "Referred",
      "garda.case.resolved": "Resolved", "garda.case.reopened": "Reopened",
      "garda.case.updated": "Updated", "garda.case.assigned": "Assigned",
      "garda.alert.escalated": "Escalation alert", "garda.alert.referral-declined": "Referral declined",
      "garda.case.referral-accepted": "Referral accepted", "garda.case.referral-declined": "Referral declined",
      "garda.case.referral-lapsed": "Referral not answered", "garda.case.claim-linked": "Claim linked",
      "garda.case.jkm-claim-missing": "No JKM claim yet" },
  },
};
const SEVERITIES = ["critical", "high", "medium", "low"];
const KINDS = ["protection", "non_procedural_departure", "coverage_gap", "claim_dispute"];
const CATEGORIES = ["death", "trafficking", "sexual_violence", "employer_violence", "detention",
  "lost_contact", "accident", "illness", "mental_health", "unpaid_wages", "document_withheld",
  "job_fraud", "deportation", "wants_to_go_home", "failed_departure", "social_security",
  "contract_mismatch", "overstay", "other"];
const STATUS_CHOICES = ["open,acknowledged,reopened", "open", "acknowledged", "reopened", "resolved", ""];
const PAGE = 50;

const S = { lang: "id", session: null, posts: {}, view: "", cases: [], next: null, caseDoc: null,
  worker: null, deliveries: null, board: null, filters: {}, live: false, pollTimer: null, es: null,
  pending: null };

const $ = (id) => document.getElementById(id);
const t = (key) => (I18N[S.lang][key] !== undefined ? I18N[S.lang][key] : key);
const tm = (group, key) => (I18N[S.lang][group] || {})[key] || key;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// ---- API -------------------------------------------------------------------------------
async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.method && opts.method !== "GET" && S.session) headers["X-Garda-CSRF"] = S.session.csrf;
  const r = await fetch(path, { method: opts.method || "GET", headers, credentials: "same-origin",
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { status: r.status, ok: r.ok, data };
}

// ---- formatting ------------------------------------------------------------------------
const locale = () => (S.lang === "id" ? "id-ID" : "en-GB");
function fmtDate(iso, tz) {
  if (!iso) return "—";
  const opts = { dateStyle: "medium", timeStyle: "short" };
  if (tz) { opts.timeZone = tz; }
  try { return new Intl.DateTimeFormat(locale(), opts).format(new Date(iso)); } catch (e) { return iso; }
}
function fmtPostTime(iso, postId) {
  const tz = (S.posts[postId] || {}).timezone;
  if (!iso || !tz) return "";
  try {
    return new Intl.DateTimeFormat(locale(), { timeZone: tz, day: "numeric", month: "short",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short" }).format(new Date(iso));
  } catch (e) { return ""; }
}
function fmtSpan(seconds) {
  const u = t("u");
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}${u.d} ${h}${u.h}`;
  if (h) return `${h}${u.h} ${String(m).padStart(2, "0")}${u.m}`;
  return `${m}${u.m} ${String(s).padStart(2, "0")}${u.s}`;
}
function maskId(id) {
  if (!id) return "—";
  return id.length > 8 ? `${id.slice(0, 4)}…${id.slice(-4)}` : `${id.slice(0, 2)}…`;
}
function deskDue(c) {
  if (c.status === "acknowledged") return c.resolve_due;
  if (c.status === "resolved") return null;
  return c.ack_due;
}
function sevBadge(sev) { return el("span", { class: `badge sev-${sev}`, text: tm("sev", sev) }); }
function stBadge(st) { return el("span", { class: "badge st", text: tm("st", st) }); }

// A countdown to the acknowledgement deadline while a case waits for one; stopped once
// acknowledged (or resolved), showing the resolve deadline instead.
function dueCell(c) {
  const wrap = el("div", {});
  const due = deskDue(c);
  const span = el("span", { class: "due", "data-case": c.case_id });
  if (c.status === "acknowledged" || c.status === "resolved") {
    span.dataset.state = "stopped";
    span.textContent = c.status === "resolved" ? t("resolved_at") : `✓ ${t("acked")}`;
    if (due && new Date(due) < new Date()) span.dataset.state = "overdue";
  } else {
    span.dataset.state = "running";
    span.dataset.due = due || "";
    tick(span);
  }
  wrap.append(span);
  if (due) {
    const label = c.status === "acknowledged" ? `${t("resolve_by")} ` : "";
    wrap.append(el("span", { class: "when", text: label + fmtDate(due) }));
    const pt = fmtPostTime(due, c.post_id);
    if (pt) wrap.append(el("span", { class: "when", text: `${t("post_time")}: ${pt}` }));
  }
  return wrap;
}
function tick(span) {
  const due = span.dataset.due;
  if (!due) { span.textContent = "—"; return; }
  const left = (new Date(due) - Date.now()) / 1000;
  if (left < 0) { span.dataset.state = "overdue"; span.textContent = `${t("late")} ${fmtSpan(-left)}`; }
  else { span.dataset.state = "running"; span.textContent = `${fmtSpan(left)} ${t("left")}`; }
}
setInterval(() => {
  document.querySelectorAll(".due[data-due]").forEach((span) => {
    if (span.dataset.state !== "stopped") tick(span);
  });
}, 1000);

// ---- i18n ------------------------------------------------------------------------------
function applyLang() {
  document.documentElement.lang = S.lang;
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  const b = $("lang");
  b.textContent = t("lang_btn");
  b.setAttribute("aria-label", t("lang_switch"));
  b.setAttribute("lang", S.lang === "id" ? "en" : "id");
  document.title = `Garda · ${t("desk")}`;
  const err = document.body.dataset.error;
  if (err) { $("signin-error").textContent = t(`err_${err}`); $("signin-error").hidden = false; }
  fillSelects();
  renderLive();
  render();
}
function fillSelects() {
  const fill = (id, values, label) => {
    const sel = $(id);
    const current = sel.value;
    sel.replaceChildren(...values.map((v) => el("option", { value: v, text: v === "" ? t("all") : label(v) })));
    if (current !== "" || values.includes(current)) sel.value = current;
  };
  fill("f-status", STATUS_CHOICES, (v) => (v.includes(",") ? t("active") : tm("st", v)));
  fill("f-severity", ["", ...SEVERITIES], (v) => tm("sev", v));
  fill("f-kind", ["", ...KINDS], (v) => tm("kinds", v));
  fill("f-category", ["", ...CATEGORIES], (v) => v.replace(/_/g, " "));
  fill("f-post", ["", ...Object.keys(S.posts)], (v) => (S.posts[v] || {}).name || v);
  for (const [k, v] of Object.entries(S.filters)) {
    const sel = document.querySelector(`#filters [name="${k}"]`);
    if (sel) sel.value = v;
  }
}

// ---- queue -----------------------------------------------------------------------------
function queueQuery(after) {
  const p = new URLSearchParams({ order: "urgency", limit: String(PAGE) });
  for (const [k, v] of Object.entries(S.filters)) if (v) p.set(k, v);
  if (after) p.set("after", after);
  return `/api/cases?${p}`;
}
async function loadQueue() {
  const r = await api(queueQuery());
  if (!r.ok) return showError("queue-count", r);
  S.cases = r.data.cases;
  S.next = r.data.next || null;
  renderQueue();
}
async function moreQueue() {
  if (!S.next) return;
  const r = await api(queueQuery(S.next));
  if (!r.ok) return;
  const seen = new Set(S.cases.map((c) => c.case_id));
  S.cases.push(...r.data.cases.filter((c) => !seen.has(c.case_id)));
  S.next = r.data.next || null;
  renderQueue();
}
function matchesFilters(c) {
  const f = S.filters;
  if (f.status && !f.status.split(",").includes(c.status)) return false;
  for (const k of ["severity", "kind", "category"]) if (f[k] && c[k] !== f[k]) return false;
  if (f.post_id && c.post_id !== f.post_id && (c.detail || {}).escalated_to !== f.post_id) return false;
  if (f.q && !c.case_id.startsWith(f.q) && !c.worker_id.startsWith(f.q)) return false;
  return true;
}
function urgencyKey(c) {
  const d = deskDue(c);
  return [d ? new Date(d).getTime() : Infinity, c.case_id];
}
function sortCases() {
  S.cases.sort((a, b) => {
    const [da, ia] = urgencyKey(a); const [db, ib] = urgencyKey(b);
    return da - db || (ia < ib ? -1 : ia > ib ? 1 : 0);
  });
}
function caseRow(c, fresh) {
  const link = el("a", { href: `/desk/cases/${encodeURIComponent(c.case_id)}`, text: c.case_id });
  const what = [tm("kinds", c.kind), c.category ? c.category.replace(/_/g, " ") : null].filter(Boolean).join(" · ");
  return el("tr", { "data-case-id": c.case_id, "data-status": c.status, class: fresh ? "fresh" : null },
    el("td", { class: "c-due", "data-label": t("col_due") }, dueCell(c)),
    el("td", { "data-label": t("col_case") }, link, " ", sevBadge(c.severity), " ",
      c.status !== "open" ? stBadge(c.status) : null, el("span", { class: "when", text: what })),
    el("td", { "data-label": t("col_worker"), title: t("col_worker") }, maskId(c.worker_id)),
    el("td", { "data-label": t("col_place") }, [c.country, c.region].filter(Boolean).join(" / ") || "—"),
    el("td", { class: "num", "data-label": t("col_level") }, String(c.escalation_level)),
    el("td", { class: "num", "data-label": t("col_reports") }, String(c.reports)));
}
function renderQueue(freshId) {
  sortCases();
  $("case-rows").replaceChildren(...S.cases.map((c) => caseRow(c, c.case_id === freshId)));
  $("queue-empty").hidden = S.cases.length > 0;
  $("more").hidden = !S.next;
  $("queue-count").textContent = S.next ? t("more_n")(S.cases.length) : t("cases_n")(S.cases.length);
  const post = S.filters.post_id;
  $("queue-post").textContent = post ? `· ${(S.posts[post] || {}).name || post}` : "";
}
function onCaseChange(c) {
  if (S.view === "queue") {
    const i = S.cases.findIndex((x) => x.case_id === c.case_id);
    if (matchesFilters(c)) {
      if (i >= 0) S.cases[i] = c; else S.cases.push(c);
      renderQueue(c.case_id);
    } else if (i >= 0) { S.cases.splice(i, 1); renderQueue(); }
  } else if (S.view === "case" && S.caseDoc && c.case_id === S.caseDoc.case_id) {
    loadCase();
  } else if (S.view === "board") {
    clearTimeout(S.boardTimer);
    S.boardTimer = setTimeout(loadBoard, 500);
  }
}

// ---- case page -------------------------------------------------------------------------
function caseIdFromPath() {
  const m = location.pathname.match(/^\/desk\/cases\/([^/]+)$/);
  return m ? decodeURIComponent(m[1]) : null;
}
async function loadCase() {
  const id = caseIdFromPath();
  const r = await api(`/api/cases/${encodeURIComponent(id)}`);
  if (r.status === 404) { show("notfound"); return; }
  if (!r.ok) return;
  S.caseDoc = r.data;
  const [w, d] = await Promise.all([
    api(`/api/workers/${encodeURIComponent(r.data.worker_id)}`),
    api(`/api/cases/${encodeURIComponent(id)}/deliveries`),
  ]);
  S.worker = w.ok ? w.data : null;
  S.deliveries = d.ok && d.data ? d.data : null;
  if (S.pending && S.pending.version !== caseVersion(S.caseDoc)) {
    S.pending = null;
    flash("action-ok", t("applied"));
  }
  renderCase();
}
function caseVersion(c) { return `${c.status}|${c.escalation_level}|${c.reports}|${(c.timeline || []).length}`; }
function dl(pairs) {
  return el("dl", {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
}
function renderCase() {
  const c = S.caseDoc;
  if (!c) return;
  $("case-h").textContent = c.case_id;
  $("case-badges").replaceChildren(sevBadge(c.severity), stBadge(c.status),
    el("span", { class: "badge st", text: `${t("level")} ${c.escalation_level}` }));
  const post = S.posts[c.post_id] || {};
  const detail = c.detail || {};
  $("case-facts").replaceChildren(el("h2", { text: [tm("kinds", c.kind), c.category ? c.category.replace(/_/g, " ") : null].filter(Boolean).join(" · ") }),
    dueCell(c),
    dl([
      [t("post"), post.name || c.post_id],
      [t("col_place"), [c.country, c.region].filter(Boolean).join(" / ")],
      [t("opened"), fmtDate(c.opened_at)],
      [t("ack_due"), c.ack_due ? `${fmtDate(c.ack_due)} (${t("post_time")}: ${fmtPostTime(c.ack_due, c.post_id) || "—"})` : null],
      [t("resolve_due"), c.resolve_due ? `${fmtDate(c.resolve_due)} (${t("post_time")}: ${fmtPostTime(c.resolve_due, c.post_id) || "—"})` : null],
      [t("reports"), String(c.reports)],
      [t("escalated_to"), detail.escalated_to || null],
      [t("routing"), c.routing_note],
      [t("reasons"), (detail.reasons || []).join(", ") || null],
    ]));
  const open = c.status !== "resolved";
  $("do-acknowledge").disabled = !(c.status === "open" || c.status === "reopened");
  $("do-reopen").disabled = open;
  $("form-refer").querySelector("button").disabled = !open;
  $("form-resolve").querySelector("button").disabled = !open;
  $("timeline").replaceChildren(...(c.timeline || []).map((e) => {
    const d = e.detail || {};
    const text = d.note || d.to || d.resolution || (d.level !== undefined ? `${t("level")} ${d.level}` : "");
    return el("li", { "data-type": e.type },
      el("div", { class: "t-type", text: tm("tl", e.type) }),
      text ? el("div", { class: "t-text", text }) : null,
      el("div", { class: "t-meta", text: `${fmtDate(e.at)} · ${e.actor || "—"}` }));
  }));
  renderWorker();
  renderDeliveries();
}
function renderWorker() {
  const w = S.worker;
  if (!w) { $("worker").replaceChildren(el("p", { class: "muted", text: "—" })); return; }
  const claims = w.claims || [];
  $("worker").replaceChildren(dl([
    [t("col_worker"), w.worker_id],
    [t("state"), w.state],
    [t("in_crisis"), w.in_crisis ? t("yes") : t("no")],
    [t("departed"), w.departed_at ? fmtDate(w.departed_at) : null],
    [t("returned"), w.returned_at ? fmtDate(w.returned_at) : null],
    [t("contract_end"), w.contract_end ? fmtDate(w.contract_end) : null],
    [t("coverage"), w.insured_until ? `${fmtDate(w.insured_from)} – ${fmtDate(w.insured_until)}` : "—"],
    [t("reasons"), (w.non_procedural_reasons || []).join(", ") || null],
  ]), el("h3", { text: t("claims") }), claims.length
    ? el("ul", {}, claims.map((cl) => el("li", { text: `${cl.claim_id} · ${cl.program} · ${cl.status}` })))
    : el("p", { class: "muted", text: t("no_claims") }));
}
// The escalation ledger (GET /api/cases/{id}/deliveries, infra.hooks.ledger): one entry per
// delivery (receiver, notified, delivered, acknowledged from its link, attempts), then the
// alerts nobody was told of (held or silenced, with why).
function fmtSeconds(s) { return s < 60 ? `${s.toFixed(1)}${t("u").s}` : fmtSpan(s); }
function deliveryItem(d) {
  const attempts = d.attempts || [];
  const last = attempts[attempts.length - 1];
  const answer = last ? (last.status_code ? String(last.status_code) : last.outcome || last.error || "") : "";
  const delivered = d.delivered_at
    ? `${fmtDate(d.delivered_at)}${d.seconds_to_deliver !== null ? ` (${t("d_in")} ${fmtSeconds(d.seconds_to_deliver)})` : ""}`
    : `${t("d_not_yet")} (${tm("dst", d.status)})`;
  const acked = d.acknowledged_at
    ? `${fmtDate(d.acknowledged_at)}${d.ack_link && d.ack_link.actor ? ` · ${t("d_by")} ${d.ack_link.actor}` : ""}`
    : null;
  const about = (d.alerts || []).map((a) => tm("tl", a.type)).join(", ");
  return el("li", { class: "dlv", "data-receiver": d.receiver, "data-status": d.status },
    el("div", { class: "t-type" }, d.receiver, " ",
      el("span", { class: `badge dst-${d.status}`, text: tm("dst", d.status) })),
    dl([
      [t("d_alerts"), about || null],
      [t("d_notified"), fmtDate(d.notified_at)],
      [t("d_delivered"), delivered],
      [t("d_acked"), acked],
      [t("d_attempts"), attempts.length ? `${attempts.length}${answer ? ` · ${t("d_last")} ${answer}` : ""}` : "0"],
      [t("d_error"), d.status !== "delivered" ? d.last_error : null],
    ]));
}
function unsentItem(a) {
  return el("li", { class: "dlv", "data-receiver": a.receiver, "data-disposition": a.disposition },
    el("div", { class: "t-type" }, a.receiver, " ",
      el("span", { class: "badge st", text: `${t("d_not_sent")}: ${tm("disp", a.disposition)}` })),
    dl([
      [t("d_alerts"), tm("tl", a.type)],
      [t("d_why"), a.reason],
      [t("d_at"), fmtDate(a.at)],
    ]));
}
function renderDeliveries() {
  const ledger = S.deliveries;
  const ds = (ledger && ledger.deliveries) || [];
  const unsent = (ledger && ledger.not_sent) || [];
  if (!ds.length && !unsent.length) {
    $("deliveries").replaceChildren(el("p", { class: "muted", "data-empty": "", text: t("no_deliveries") }));
    return;
  }
  const acked = ledger.case_acknowledged_at && !ds.some((d) => d.acknowledged_at)
    ? el("p", { class: "muted", "data-case-acked": "", text: `${t("d_case_acked")}: ${fmtDate(ledger.case_acknowledged_at)}` })
    : null;
  $("deliveries").replaceChildren(el("ul", { class: "timeline" }, ds.map(deliveryItem), unsent.map(unsentItem)), acked);
}
async function act(action, body, form) {
  $("action-error").hidden = true;
  $("action-ok").hidden = true;
  const c = S.caseDoc;
  const r = await api(`/api/cases/${encodeURIComponent(c.case_id)}/${action}`,
    { method: "POST", body: { actor: S.session.actor, ...body } });
  if (!r.ok) {
    $("action-error").textContent = `${t("refused")} (${r.status}): ${(r.data && r.data.error) || ""}`;
    $("action-error").hidden = false;
    return;
  }
  if (form) form.reset();
  S.pending = { version: caseVersion(c) };
  flash("action-ok", t("sent"));
  // The action is applied by the processor; the live stream brings the change. Poll too.
  for (let i = 0; i < 20 && S.pending; i++) {
    await new Promise((res) => setTimeout(res, 500));
    if (S.pending) await loadCase();
  }
}
function flash(id, text) { $(id).textContent = text; $(id).hidden = false; }
function showError(id, r) { $(id).textContent = `${r.status}: ${(r.data && r.data.error) || ""}`; }

// ---- board -----------------------------------------------------------------------------
async function loadBoard() {
  const r = await api("/api/board");
  if (!r.ok) return;
  S.board = r.data;
  renderBoard();
}
function chart(daily) {
  const w = 112, h = 28, bw = w / daily.length;
  const max = Math.max(1, ...daily);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("class", "chart"); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${t("chart")}: ${daily.join(", ")}`);
  daily.forEach((n, i) => {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const bh = n ? Math.max(2, (n / max) * (h - 2)) : 1;
    r.setAttribute("x", (i * bw + 1).toFixed(1)); r.setAttribute("width", (bw - 2).toFixed(1));
    r.setAttribute("y", (h - bh).toFixed(1)); r.setAttribute("height", bh.toFixed(1));
    if (!n) r.setAttribute("class", "zero");
    svg.append(r);
  });
  return svg;
}
function renderBoard() {
  $("board-help").textContent = t("board_help");
  if (!S.board) return;
  $("board-rows").replaceChildren(...S.board.posts.map((p) => {
    const href = `/desk?post_id=${encodeURIComponent(p.post_id)}`;
    const row = el("tr", { "data-post": p.post_id, onclick: (e) => { if (e.target.tagName !== "A") go(href); } },
      el("th", { scope: "row" }, el("a", { href, text: p.name })),
      el("td", { class: "num", "data-label": t("open") }, String(p.open)),
      el("td", { class: "num", "data-label": t("overdue") },
        p.overdue ? el("span", { class: "error", text: String(p.overdue) }) : "0"),
      el("td", { class: "num", "data-label": t("level1") }, String(p.level1)),
      el("td", { class: "num", "data-label": t("level2") }, String(p.level2)),
      el("td", { class: "num", "data-label": t("median_ack") },
        p.median_ack_seconds === null ? "—" : fmtSpan(p.median_ack_seconds)),
      el("td", { "data-label": t("chart") }, chart(p.opened_daily)));
    return row;
  }));
}

// ---- live updates: server-sent events, polling when they fail ----------------------------
function renderLive() { $("live").textContent = S.session ? (S.live ? t("live_on") : t("live_poll")) : ""; }
function startLive() {
  if (!window.EventSource) { startPolling(); return; }
  const es = new EventSource("/api/stream");
  S.es = es;
  const fallback = setTimeout(() => { if (!S.live) startPolling(); }, 4000);
  es.addEventListener("hello", () => { clearTimeout(fallback); S.live = true; stopPolling(); renderLive(); });
  es.addEventListener("case", (ev) => onCaseChange(JSON.parse(ev.data)));
  es.addEventListener("resync", () => refresh());
  es.addEventListener("ended", () => { es.close(); location.reload(); });
  es.onerror = () => { S.live = false; renderLive(); startPolling(); };
}
function startPolling() {
  if (S.pollTimer) return;
  S.pollTimer = setInterval(refresh, 2000);
  renderLive();
}
function stopPolling() { if (S.pollTimer) { clearInterval(S.pollTimer); S.pollTimer = null; } }
function refresh() {
  if (S.view === "queue") loadQueue();
  else if (S.view === "case") loadCase();
  else if (S.view === "board") loadBoard();
}

// ---- routing ---------------------------------------------------------------------------
function show(view) {
  for (const id of ["signin", "notfound", "queue", "case", "board"]) $(id).hidden = id !== view;
  S.view = view;
  $("nav-queue").toggleAttribute("aria-current", view === "queue");
  if (view === "queue") $("nav-queue").setAttribute("aria-current", "page");
  if (view === "board") $("nav-board").setAttribute("aria-current", "page");
  else $("nav-board").removeAttribute("aria-current");
}
function render() {
  if (S.view === "queue") renderQueue();
  else if (S.view === "case") renderCase();
  else if (S.view === "board") renderBoard();
}
function route() {
  if (location.pathname.startsWith("/desk/cases/")) {
    show("case");
    S.caseDoc = null;
    loadCase();
  } else if (location.pathname.replace(/\/$/, "") === "/desk/board") {
    show("board");
    loadBoard();
  } else {
    show("queue");
    const p = new URLSearchParams(location.search);
    S.filters = { status: p.get("status") ?? "open,acknowledged,reopened" };
    for (const k of ["severity", "kind", "category", "q", "post_id"]) if (p.get(k)) S.filters[k] = p.get(k);
    fillSelects();
    loadQueue();
  }
}
function go(href) {
  history.pushState({}, "", href);
  route();
  $("main").focus();
}

// ---- start -----------------------------------------------------------------------------
async function start() {
  const saved = localStorage.getItem("garda.lang");
  S.lang = saved === "en" ? "en" : "id";
  $("lang").addEventListener("click", () => {
    S.lang = S.lang === "id" ? "en" : "id";
    localStorage.setItem("garda.lang", S.lang);
    applyLang();
  });
  const view = document.body.dataset.view;
  if (view === "signin" || view === "notfound") {
    show(view);
    applyLang();
    if (view === "signin") $("token").focus();
    return;
  }
  const r = await api("/desk/session");
  S.session = r.data;
  $("who").textContent = `${S.session.actor} · ${S.session.hq ? "HQ" : S.session.posts.join(", ")}`;
  $("nav").hidden = false;
  $("signout").hidden = false;
  $("signout").addEventListener("click", async () => {
    await api("/desk/signout", { method: "POST", body: {} });
    location.href = "/desk";
  });
  const posts = await api("/api/posts");
  for (const p of (posts.data || {}).posts || []) S.posts[p.post_id] = p;
  $("f-post-wrap").hidden = !(S.session.hq || S.session.posts.length > 1);
  $("filters").addEventListener("change", (e) => {
    const f = new FormData($("filters"));
    S.filters = {};
    for (const [k, v] of f.entries()) if (v) S.filters[k] = String(v).trim();
    if (!f.get("status")) S.filters.status = "";
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(S.filters)) p.set(k, v);
    history.replaceState({}, "", `/desk?${p}`);
    if (e.target.name !== "q") loadQueue();
  });
  let searchTimer = null;
  $("f-q").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => $("filters").dispatchEvent(new Event("change")), 250);
  });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); loadQueue(); });
  $("more").addEventListener("click", moreQueue);
  $("do-acknowledge").addEventListener("click", () => act("acknowledge", {}));
  $("do-reopen").addEventListener("click", () => act("reopen", {}));
  $("form-note").addEventListener("submit", (e) => { e.preventDefault(); act("notes", { note: $("note-text").value }, e.target); });
  $("form-refer").addEventListener("submit", (e) => { e.preventDefault(); act("refer", { to: $("refer-to").value }, e.target); });
  $("form-resolve").addEventListener("submit", (e) => { e.preventDefault(); act("resolve", { resolution: $("resolution").value }, e.target); });
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[href^='/desk']");
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  route();
  applyLang();
  startLive();
}
document.addEventListener("DOMContentLoaded", start);
