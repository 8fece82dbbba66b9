/* videojobs dashboard: plain JavaScript, no build step, no third-party code.
 *
 * Talks to the JSON API with same-origin fetch (cookie session). Every text that comes
 * from the API or the user is put into the page with textContent or attributes, never
 * parsed as HTML. Jobs are followed by polling their status every 3 s; a reload resumes
 * following unfinished jobs from GET /api/templates/video/jobs.
 */
(() => {
  "use strict";

  const POLL_MS = 3000;
  const REQUEST_TIMEOUT_MS = 10000;
  const UPLOAD_TIMEOUT_MS = 180000;
  const MAX_JOBS_SHOWN = 20;
  const TERMINAL = new Set(["completed", "failed"]);
  const STARTED_TEXT = "Video generation started! This may take a few minutes...";
  const COMPLETED_TEXT = "Video generated successfully!";

  const $ = (id) => document.getElementById(id);

  const state = {
    signedIn: false,
    credits: null,
    templates: [],
    jobs: new Map(),       // jobId -> job view model
    jobEls: new Map(),     // jobId -> <li>
    cards: new Map(),      // library key -> <li>
    pollTimer: null,
    polling: false,
    lastMediaRefresh: 0,
  };

  // ---------------------------------------------------------------- API access

  class ApiError extends Error {
    constructor(status, code, body, retryAfter) {
      super(code);
      this.status = status;
      this.code = code;
      this.body = body;
      this.retryAfter = retryAfter;
    }
  }

  async function api(method, path, opts = {}) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), opts.timeout || REQUEST_TIMEOUT_MS);
    const init = {
      method,
      headers: { Accept: "application/json", ...(opts.headers || {}) },
      credentials: "same-origin",
      cache: "no-store",
      signal: ctrl.signal,
    };
    if (opts.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.json);
    } else if (opts.form) {
      init.body = opts.form; // the browser sets the multipart boundary
    }
    let resp;
    let body = null;
    try {
      resp = await fetch(path, init);
      if (resp.status !== 204) {
        try { body = await resp.json(); } catch (_) { body = null; }
      }
    } catch (_) {
      throw new ApiError(0, "NETWORK_ERROR", null, null);
    } finally {
      clearTimeout(timer);
    }
    if (!resp.ok) {
      const code = body && typeof body.error === "string" ? body.error : `HTTP ${resp.status}`;
      const err = new ApiError(resp.status, code, body, resp.headers.get("Retry-After"));
      if (resp.status === 401 && state.signedIn && !opts.noSignOut) signedOut(true);
      throw err;
    }
    return body;
  }

  function detailsText(details) {
    if (!details || typeof details !== "object") return "";
    return Object.entries(details)
      .map(([field, msgs]) => `${field.replace(/^variables\./, "")}: ${[].concat(msgs).join(" ")}`)
      .join("; ");
  }

  function describeError(err) {
    switch (err.code) {
      case "INSUFFICIENT_CREDITS": return "Not enough credits";
      case "RATE_LIMITED":
        return `Too many requests: try again in ${err.retryAfter || "a few"} seconds`;
      case "UNAUTHORIZED": return "Your session has ended: please sign in again";
      case "VALIDATION_ERROR": {
        const more = detailsText(err.body && err.body.details);
        return more ? `Please check the form: ${more}` : "Please check the form";
      }
      case "FILE_TOO_LARGE": return "The file is too large (FILE_TOO_LARGE)";
      case "UNSUPPORTED_MEDIA_TYPE":
        return "Only PNG, JPEG or WebP images can be uploaded (UNSUPPORTED_MEDIA_TYPE)";
      case "IDEMPOTENCY_KEY_REUSED": return "This request was already sent with other settings";
      case "SERVICE_UNAVAILABLE": return "The service is unavailable right now: try again shortly";
      case "CSRF_REJECTED": return "The request was refused (CSRF_REJECTED): reload the page";
      case "JOB_FINISHED": return "That job has already finished";
      case "NETWORK_ERROR": return "Network problem: the server could not be reached";
      default: return err.code || "Something went wrong";
    }
  }

  // ---------------------------------------------------------------- helpers

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // randomUUID needs a secure context; getRandomValues works on plain http too.
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "className") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function formatCredits(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleString(undefined, {
      month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function formatBytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function humanize(name) {
    const s = String(name).replace(/[_-]+/g, " ");
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  // ---------------------------------------------------------------- toasts

  function toast(text, kind = "info", ms) {
    const region = $("toasts");
    const close = el("button", { type: "button", className: "toast-close", text: "Close" });
    const node = el("div", { className: `toast toast-${kind}` },
      el("p", { className: "toast-text", text }), close);
    const remove = () => node.remove();
    close.addEventListener("click", remove);
    region.append(node);
    while (region.children.length > 5) region.firstElementChild.remove();
    setTimeout(remove, ms || (kind === "error" ? 12000 : 8000));
    return node;
  }

  function toastError(err, prefix) {
    if (err.code === "UNAUTHORIZED" && !state.signedIn) return; // the login form says it
    toast(prefix ? `${prefix}: ${describeError(err)}` : describeError(err), "error");
  }

  // ---------------------------------------------------------------- account

  function setCredits(n) {
    state.credits = n;
    $("credits").textContent = formatCredits(n);
  }

  async function refreshMe() {
    try {
      const me = await api("GET", "/api/me");
      $("account-email").textContent = me.email;
      setCredits(me.credits);
    } catch (err) {
      if (err.status !== 401) console.warn("could not refresh the balance", err.code);
    }
  }

  function showView(signedIn) {
    $("login-view").hidden = signedIn;
    $("app-view").hidden = !signedIn;
    $("account").hidden = !signedIn;
    document.body.dataset.signedIn = signedIn ? "true" : "false";
  }

  async function signedIn(account) {
    state.signedIn = true;
    $("account-email").textContent = account.email;
    setCredits(account.credits);
    showView(true);
    await Promise.all([
      loadTemplates().catch((e) => toastError(e, "Could not load templates")),
      refreshLibrary().catch((e) => toastError(e, "Could not load the library")),
      resumeJobs().catch((e) => toastError(e, "Could not load your jobs")),
    ]);
    loadWebhook().catch((e) => toastError(e, "Could not load the webhook"));
  }

  function signedOut(expired) {
    state.signedIn = false;
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
    state.jobs.clear();
    state.jobEls.clear();
    state.cards.clear();
    $("job-list").replaceChildren();
    $("library-grid").replaceChildren();
    $("jobs-empty").hidden = false;
    $("account-email").textContent = "";
    setCredits(null);
    showView(false);
    if (expired) toast("Your session has ended: please sign in again", "error");
    $("login-email").focus();
  }

  async function onLogin(event) {
    event.preventDefault();
    const form = $("login-form");
    const error = $("login-error");
    error.textContent = "";
    if (!form.reportValidity()) return;
    const button = $("login-submit");
    button.disabled = true;
    try {
      const account = await api("POST", "/api/auth/login", {
        json: { email: $("login-email").value.trim(), password: $("login-password").value },
        noSignOut: true,
      });
      $("login-password").value = "";
      await signedIn(account);
      $("main").focus();
    } catch (err) {
      error.textContent = err.code === "INVALID_CREDENTIALS"
        ? "Wrong email or password." : describeError(err);
      $("login-password").focus();
    } finally {
      button.disabled = false;
    }
  }

  async function onLogout() {
    try {
      await api("POST", "/api/auth/logout", { noSignOut: true });
    } catch (err) {
      if (err.status !== 401) { toastError(err, "Could not log out"); return; }
    }
    signedOut(false);
    toast("You are signed out.", "info");
  }

  // ---------------------------------------------------------------- templates

  function currentTemplate() {
    const slug = $("template-select").value;
    return state.templates.find((t) => t.slug === slug) || null;
  }

  function templateName(slug) {
    const t = state.templates.find((x) => x.slug === slug);
    return t ? t.name : slug;
  }

  async function loadTemplates() {
    const body = await api("GET", "/api/templates");
    state.templates = Array.isArray(body.templates) ? body.templates : [];
    const select = $("template-select");
    const previous = select.value;
    select.replaceChildren(...state.templates.map((t) =>
      el("option", { value: t.slug, text: t.name })));
    if (!state.templates.length) {
      select.append(el("option", { value: "", text: "No templates available" }));
    } else if (state.templates.some((t) => t.slug === previous)) {
      select.value = previous;
    }
    onTemplateChange();
    renderJobs(); // job rows show template names
  }

  function onTemplateChange() {
    const t = currentTemplate();
    const durationSelect = $("duration-select");
    const fields = $("variable-fields");
    fields.replaceChildren();
    durationSelect.replaceChildren();
    if (!t) { updateCost(); updateAnimateButtons(); return; }
    const durations = Object.keys(t.durations || {}).sort((a, b) => Number(a) - Number(b));
    for (const d of durations) {
      durationSelect.append(el("option", { value: d,
        text: `${d} seconds (${formatCredits(t.durations[d])} credits)` }));
    }
    if (durations.includes("5")) durationSelect.value = "5";
    (t.variables || []).forEach((v, i) => {
      const id = `var-${i}`;
      const label = el("label", { for: id, text: humanize(v.name) + (v.required ? " (required)" : "") });
      let input;
      if (Array.isArray(v.choices) && v.choices.length) {
        input = el("select", { id, name: v.name });
        if (!v.required && (v.default === null || v.default === undefined)) {
          input.append(el("option", { value: "", text: "(default)" }));
        }
        for (const c of v.choices) input.append(el("option", { value: String(c), text: String(c) }));
        if (v.default !== null && v.default !== undefined) input.value = String(v.default);
      } else {
        input = el("input", { id, name: v.name, type: "text", autocomplete: "off" });
        if (v.max_length) input.maxLength = v.max_length;
        if (v.default !== null && v.default !== undefined) input.value = String(v.default);
      }
      input.required = Boolean(v.required);
      input.dataset.variable = v.name;
      fields.append(el("div", { className: "field" }, label, input));
    });
    updateCost();
    updateAnimateButtons();
  }

  function currentCost() {
    const t = currentTemplate();
    const d = $("duration-select").value;
    return t && t.durations && d in t.durations ? t.durations[d] : null;
  }

  function updateCost() {
    const cost = currentCost();
    $("cost").textContent = cost === null ? "–" : `${formatCredits(cost)} credits`;
  }

  function collectVariables() {
    const variables = {};
    for (const input of $("variable-fields").querySelectorAll("[data-variable]")) {
      const value = input.value.trim();
      if (value !== "") variables[input.dataset.variable] = value;
    }
    return variables;
  }

  // ---------------------------------------------------------------- starting a job

  async function startVideo(body, button) {
    // One key per click: a retry after a network error re-sends the same key, so the
    // job is created (and charged) once whatever happened to the first answer.
    const key = uuid();
    const send = () => api("POST", "/api/templates/video", {
      json: body, headers: { "Idempotency-Key": key } });
    try {
      return await send();
    } catch (err) {
      if (err.status !== 0) throw err;
      button.textContent = "Retrying…";
      await sleep(1000);
      return send();
    }
  }

  async function onAnimate(item, button) {
    if (button.dataset.busy === "true") return; // a double click sends one request
    const t = currentTemplate();
    if (!t) { toast("Pick a template first", "error"); $("template-select").focus(); return; }
    if (!$("template-form").reportValidity()) return;
    const body = {
      templateSlug: t.slug,
      startKey: item.key,
      duration: $("duration-select").value,
      variables: collectVariables(),
    };
    button.dataset.busy = "true";
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Starting…";
    try {
      const started = await startVideo(body, button);
      toast(STARTED_TEXT, "info");
      upsertJob({
        jobId: started.jobId, status: started.status || "pending",
        templateSlug: t.slug, duration: body.duration, credits: started.credits,
        createdAt: new Date().toISOString(), message: "Waiting for a worker...",
      });
      renderJobs();
      if (typeof state.credits === "number" && typeof started.credits === "number") {
        setCredits(state.credits - started.credits); // at once; confirmed below
      }
      refreshMe();
      schedulePoll();
    } catch (err) {
      toastError(err);
      if (err.code === "INSUFFICIENT_CREDITS") refreshMe();
    } finally {
      delete button.dataset.busy;
      button.disabled = false;
      button.textContent = label;
    }
  }

  // ---------------------------------------------------------------- following jobs

  function upsertJob(fields) {
    const job = state.jobs.get(fields.jobId) || { jobId: fields.jobId };
    Object.assign(job, fields);
    state.jobs.set(job.jobId, job);
    return job;
  }

  function activeJobs() {
    return [...state.jobs.values()].filter((j) => !TERMINAL.has(j.status));
  }

  async function resumeJobs() {
    const body = await api("GET", `/api/templates/video/jobs?limit=${MAX_JOBS_SHOWN}`);
    for (const j of (body.jobs || []).slice().reverse()) {
      if (state.jobs.has(j.jobId)) continue;
      upsertJob({
        jobId: j.jobId, status: j.status, templateSlug: j.templateSlug,
        duration: j.duration, credits: j.credits, createdAt: j.createdAt,
        message: j.status === "completed" ? "Saved to your library" : "",
      });
    }
    renderJobs();
    schedulePoll(activeJobs().length ? 0 : POLL_MS);
  }

  function schedulePoll(delay = POLL_MS) {
    if (state.polling || !state.signedIn) return; // the running round schedules the next
    clearTimeout(state.pollTimer);
    state.pollTimer = activeJobs().length ? setTimeout(pollRound, delay) : null;
  }

  async function pollRound() {
    state.pollTimer = null;
    state.polling = true;
    try {
      await Promise.all(activeJobs().map(pollJob));
    } finally {
      state.polling = false;
    }
    renderJobs();
    schedulePoll();
  }

  async function pollJob(job) {
    try {
      const status = await api("GET",
        `/api/templates/video/status?jobId=${encodeURIComponent(job.jobId)}`,
        { timeout: 8000 });
      job.stale = false;
      applyStatus(job, status, false);
    } catch (err) {
      if (err.status === 404) {
        applyStatus(job, { status: "failed", error: "Job not found" }, false);
      } else if (err.status !== 401) {
        job.stale = true; // transient: keep following it
      }
    }
  }

  function applyStatus(job, status, cancelled) {
    const before = job.status;
    job.status = status.status;
    job.message = status.message || "";
    job.error = status.error || "";
    job.refunded = Boolean(status.refunded);
    job.progress = status.progress;
    job.queuePosition = status.queuePosition;
    if (status.url) job.url = status.url;
    if (TERMINAL.has(before) || !TERMINAL.has(job.status)) return;
    if (job.status === "completed") {
      toast(COMPLETED_TEXT, "success");
      refreshLibrary().catch((e) => toastError(e, "Could not refresh the library"));
    } else if (cancelled) {
      toast(`Job cancelled.${job.refunded ? " Your credits were refunded." : ""}`, "info");
    } else {
      const reason = job.error || "unknown error";
      toast(`Video generation failed: ${reason}` + (job.refunded
        ? `${/[.!?]$/.test(reason) ? "" : "."} Your credits were refunded.` : ""), "error");
    }
    refreshMe();
  }

  async function onCancel(job, button) {
    button.disabled = true;
    try {
      const status = await api("POST", "/api/templates/video/cancel", { json: { jobId: job.jobId } });
      applyStatus(job, status, true);
    } catch (err) {
      if (err.code === "JOB_FINISHED") await pollJob(job);
      else toastError(err, "Could not cancel");
    } finally {
      button.disabled = false;
      renderJobs();
    }
  }

  const STATUS_LABEL = {
    pending: "Pending", processing: "Processing", completed: "Completed", failed: "Failed",
  };

  function jobDetail(job) {
    if (job.status === "failed") {
      return (job.error || "Failed") + (job.refunded ? " (credits refunded)" : "");
    }
    if (job.status === "completed") return job.message || "Saved to your library";
    let text = job.message || (job.status === "processing" ? "Generating video..." : "Waiting for a worker...");
    if (typeof job.queuePosition === "number") text += ` Queue position: ${job.queuePosition}.`;
    if (typeof job.progress === "string" && job.progress) text += ` ${job.progress.slice(0, 120)}`;
    if (job.stale) text += " (connection problem, retrying)";
    return text;
  }

  function jobElement(job) {
    let li = state.jobEls.get(job.jobId);
    if (li) return li;
    const cancel = el("button", { type: "button", className: "btn btn-small btn-quiet", text: "Cancel" });
    cancel.addEventListener("click", () => onCancel(state.jobs.get(job.jobId), cancel));
    li = el("li", { className: "job", dataset: { jobId: job.jobId } },
      el("div", { className: "job-head" },
        el("span", { className: "job-title" }),
        el("span", { className: "badge" })),
      el("p", { className: "job-meta" }),
      el("p", { className: "job-detail" }),
      el("div", { className: "job-actions" }, cancel));
    state.jobEls.set(job.jobId, li);
    return li;
  }

  function renderJobs() {
    const list = $("job-list");
    const jobs = [...state.jobs.values()]
      .sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")));
    for (const old of jobs.slice(MAX_JOBS_SHOWN)) {
      if (TERMINAL.has(old.status)) {
        state.jobs.delete(old.jobId);
        const gone = state.jobEls.get(old.jobId);
        if (gone) gone.remove();
        state.jobEls.delete(old.jobId);
      }
    }
    const shown = jobs.filter((j) => state.jobs.has(j.jobId));
    shown.forEach((job, i) => {
      const li = jobElement(job);
      li.dataset.status = job.status;
      li.querySelector(".job-title").textContent = templateName(job.templateSlug || "");
      const badge = li.querySelector(".badge");
      badge.textContent = STATUS_LABEL[job.status] || job.status;
      badge.className = `badge badge-${job.status}`;
      const when = formatTime(job.createdAt);
      li.querySelector(".job-meta").textContent =
        `${job.duration ? `${job.duration} s` : ""}${typeof job.credits === "number"
          ? ` · ${formatCredits(job.credits)} credits` : ""}${when ? ` · ${when}` : ""}`;
      li.querySelector(".job-detail").textContent = jobDetail(job);
      const actions = li.querySelector(".job-actions");
      actions.hidden = TERMINAL.has(job.status);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    while (list.children.length > shown.length) list.lastElementChild.remove();
    $("jobs-empty").hidden = shown.length > 0;
  }

  // ---------------------------------------------------------------- library

  function updateAnimateButtons() {
    const none = !currentTemplate();
    for (const b of document.querySelectorAll(".animate-btn")) {
      if (b.dataset.busy !== "true") b.disabled = none;
    }
  }

  function mediaFailed() {
    // Signed links expire after a while: fetch fresh ones (at most once a minute).
    const now = Date.now();
    if (now - state.lastMediaRefresh < 60000) return;
    state.lastMediaRefresh = now;
    refreshLibrary({ renewFailed: true }).catch(() => {});
  }

  function makeCard(item, index) {
    const when = formatTime(item.createdAt);
    const metaId = `item-meta-${index}-${Math.random().toString(36).slice(2, 8)}`;
    let media;
    if (item.kind === "video") {
      media = el("video", { className: "media", controls: true, preload: "metadata",
        playsInline: true, src: item.url,
        "aria-label": `Generated video${when ? ` from ${when}` : ""}` });
    } else {
      media = el("img", { className: "media", src: item.url, loading: "lazy", decoding: "async",
        alt: `Design image${when ? ` uploaded ${when}` : ""}` });
    }
    media.addEventListener("error", () => { media.dataset.failed = "true"; mediaFailed(); });
    const meta = el("p", { className: "card-meta", id: metaId,
      text: [item.kind === "video" ? "Video" : "Image", when, formatBytes(item.size)]
        .filter(Boolean).join(" · ") });
    const actions = el("div", { className: "card-actions" });
    if (item.kind === "image") {
      const animate = el("button", { type: "button", className: "btn btn-primary animate-btn",
        text: "Animate", "aria-describedby": metaId });
      animate.disabled = !currentTemplate();
      animate.addEventListener("click", () => onAnimate(item, animate));
      actions.append(animate);
    } else {
      actions.append(el("a", { className: "btn", href: item.url, download: "",
        text: "Download", "aria-describedby": metaId }));
    }
    const del = el("button", { type: "button", className: "btn btn-quiet", text: "Delete",
      "aria-describedby": metaId });
    del.addEventListener("click", () => onDelete(item, del));
    actions.append(del);
    return el("li", { className: `card card-${item.kind}`, dataset: { key: item.key, kind: item.kind } },
      el("div", { className: "media-box" }, media), meta, actions);
  }

  async function refreshLibrary(opts = {}) {
    const body = await api("GET", "/api/library");
    const items = Array.isArray(body.items) ? body.items : [];
    const grid = $("library-grid");
    const wanted = new Set(items.map((i) => i.key));
    for (const [key, card] of state.cards) {
      if (!wanted.has(key)) { card.remove(); state.cards.delete(key); }
    }
    items.forEach((item, i) => {
      let card = state.cards.get(item.key);
      if (!card) {
        card = makeCard(item, i);
        state.cards.set(item.key, card);
      } else if (opts.renewFailed) {
        const media = card.querySelector(".media");
        if (media && media.dataset.failed === "true") {
          delete media.dataset.failed;
          media.src = item.url;
          const link = card.querySelector("a[download]");
          if (link) link.href = item.url;
        }
      }
      // Only move a card when it is out of place: moving a playing video pauses it.
      if (grid.children[i] !== card) grid.insertBefore(card, grid.children[i] || null);
    });
    $("library-empty").hidden = items.length > 0;
  }

  async function onDelete(item, button) {
    const what = item.kind === "video" ? "video" : "image";
    if (!window.confirm(`Delete this ${what}? This cannot be undone.`)) return;
    button.disabled = true;
    try {
      await api("DELETE", `/api/library?key=${encodeURIComponent(item.key)}`);
      const card = state.cards.get(item.key);
      if (card) card.remove();
      state.cards.delete(item.key);
      $("library-empty").hidden = state.cards.size > 0;
      toast(`The ${what} was deleted.`, "info");
    } catch (err) {
      button.disabled = false;
      toastError(err, "Could not delete");
    }
  }

  async function onUpload(event) {
    event.preventDefault();
    const input = $("upload-file");
    const error = $("upload-error");
    error.textContent = "";
    const file = input.files && input.files[0];
    if (!file) {
      error.textContent = "Choose an image file first.";
      input.focus();
      return;
    }
    const button = $("upload-submit");
    button.disabled = true;
    button.textContent = "Uploading…";
    try {
      const form = new FormData();
      form.append("file", file, file.name);
      await api("POST", "/api/library", { form, timeout: UPLOAD_TIMEOUT_MS });
      input.value = "";
      toast(`Uploaded ${file.name}`, "success");
      await refreshLibrary();
    } catch (err) {
      const text = `Upload failed: ${describeError(err)}`;
      error.textContent = text;
      toast(text, "error");
    } finally {
      button.disabled = false;
      button.textContent = "Upload";
    }
  }

  // ---------------------------------------------------------------- webhook

  const DELIVERY_REFRESH_MS = 10000;
  const DELIVERY_JOBS = 5;

  function setWebhook(url, secret) {
    $("webhook-url").value = url || "";
    $("webhook-rotate").disabled = !url;
    $("webhook-remove").disabled = !url;
    $("webhook-secret").textContent = secret || "";
    $("webhook-secret-row").hidden = !secret;
  }

  async function loadWebhook() {
    try {
      const hook = await api("GET", "/api/webhook");
      setWebhook(hook.url, null);
    } catch (err) {
      if (err.status !== 404) throw err;
      setWebhook("", null);
    }
    await refreshDeliveries();
  }

  async function onWebhookSave(event) {
    event.preventDefault();
    const error = $("webhook-error");
    error.textContent = "";
    try {
      const hook = await api("PUT", "/api/webhook", { json: { url: $("webhook-url").value.trim() } });
      setWebhook(hook.url, hook.secret);
      toast("Webhook saved: verify deliveries with the signing secret shown");
    } catch (err) {
      const details = err.body && err.body.details;
      error.textContent = details && details.url ? [].concat(details.url).join(" ") : describeError(err);
    }
  }

  async function onWebhookRotate() {
    try {
      const hook = await api("POST", "/api/webhook/rotate");
      setWebhook(hook.url, hook.secret);
      toast("New signing secret: the next deliveries are signed with it");
    } catch (err) { toastError(err, "Could not rotate the secret"); }
  }

  async function onWebhookRemove() {
    try {
      await api("DELETE", "/api/webhook");
      setWebhook("", null);
      toast("Webhook removed");
    } catch (err) { toastError(err, "Could not remove the webhook"); }
  }

  async function refreshDeliveries() {
    if (!state.signedIn) return;
    const jobs = Array.from(state.jobs.values())
      .sort((a, b) => String(b.createdAt || "").localeCompare(String(a.createdAt || "")))
      .slice(0, DELIVERY_JOBS);
    const found = [];
    for (const job of jobs) {
      try {
        const body = await api("GET", `/api/templates/video/webhooks?jobId=${encodeURIComponent(job.jobId)}`);
        for (const d of body.deliveries) found.push({ ...d, job });
      } catch (_) { /* the next refresh tries again */ }
    }
    const list = $("delivery-list");
    list.replaceChildren(...found.map((d) => el("li", { className: "delivery", dataset: { state: d.state } },
      el("span", { className: `badge badge-${d.state === "failed" ? "failed" : d.state}`, text: d.state }),
      el("span", { text: d.type }),
      el("span", { className: "delivery-meta",
        text: `${templateName(d.job.templateSlug || "")} · ${d.attempts} attempt${d.attempts === 1 ? "" : "s"}` +
          (d.lastStatus ? ` · HTTP ${d.lastStatus}` : "") + (d.lastError && d.state !== "delivered" ? ` · ${d.lastError}` : "") }))));
    $("deliveries-empty").hidden = found.length > 0;
  }

  function setupWebhookPanel() {
    $("webhook-form").addEventListener("submit", onWebhookSave);
    $("webhook-rotate").addEventListener("click", onWebhookRotate);
    $("webhook-remove").addEventListener("click", onWebhookRemove);
    setInterval(() => {
      if (state.signedIn && document.visibilityState === "visible") refreshDeliveries();
    }, DELIVERY_REFRESH_MS);
  }

  // ---------------------------------------------------------------- start

  async function boot() {
    $("login-form").addEventListener("submit", onLogin);
    $("logout").addEventListener("click", onLogout);
    $("upload-form").addEventListener("submit", onUpload);
    $("template-select").addEventListener("change", onTemplateChange);
    $("duration-select").addEventListener("change", updateCost);
    setupWebhookPanel();
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && state.signedIn) {
        refreshMe();
        schedulePoll(0);
      }
    });
    try {
      const me = await api("GET", "/api/me", { noSignOut: true });
      await signedIn(me);
    } catch (err) {
      showView(false);
      if (err.status !== 401) toastError(err);
    }
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
