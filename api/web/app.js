// Clipstream web client: plain ES modules, no build step. Talks to the documented API.
const view = document.getElementById("view");
const store = {
  get token() { return localStorage.getItem("cs_token"); },
  get me() { return JSON.parse(localStorage.getItem("cs_me") || "null"); },
  save(session) { localStorage.setItem("cs_token", session.token); localStorage.setItem("cs_me", JSON.stringify(session.user)); },
  clear() { localStorage.removeItem("cs_token"); localStorage.removeItem("cs_me"); },
};

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text; t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 2500);
}

async function api(method, path, body) {
  const headers = {};
  if (store.token) headers.Authorization = `Bearer ${store.token}`;
  const form = body instanceof FormData;
  if (body !== undefined && !form) headers["Content-Type"] = "application/json";
  const payload = body === undefined || form ? body : JSON.stringify(body);
  const resp = await fetch(path, { method, headers, body: payload });
  if (resp.status === 401 && store.token) { store.clear(); renderNav(); }
  const data = resp.status === 204 ? null : await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(data?.detail || `${resp.status} ${resp.statusText}`);
  return data;
}

function renderNav() {
  const nav = document.getElementById("nav-account");
  const me = store.me;
  const reviewer = me && (me.role === "reviewer" || me.role === "admin");
  nav.innerHTML = me
    ? `${reviewer ? `<a href="#/review" data-testid="nav-review">Review</a>` : ""}<a href="#/@${esc(me.handle)}" data-testid="nav-me">@${esc(me.handle)}</a><button class="link" data-testid="logout">Log out</button>`
    : `<a href="#/login" data-testid="nav-login">Log in</a>`;
  nav.querySelector("[data-testid=logout]")?.addEventListener("click", async () => {
    try { await api("POST", "/v1/auth/logout"); } catch (e) { /* already gone */ }
    store.clear(); renderNav(); location.hash = "#/";
  });
}

function requireLogin() {
  if (store.token) return true;
  toast("Log in first"); location.hash = "#/login"; return false;
}

function clipCard(clip) {
  const el = document.createElement("article");
  el.className = "clip"; el.dataset.clipId = clip.id; el.dataset.testid = "clip";
  el.innerHTML = `
    <video src="${esc(clip.video_url)}" poster="${esc(clip.poster_url)}" muted loop playsinline preload="metadata"></video>
    <div class="meta">
      <a class="who" href="#/@${esc(clip.creator.handle)}" data-testid="author">@${esc(clip.creator.handle)}</a>
      <p class="prompt">${esc(clip.prompt)}</p>
      <div class="actions">
        <button data-testid="like" class="${clip.viewer_liked ? "on" : ""}">♥ <span>${clip.stats.likes}</span></button>
        <button data-testid="follow">Follow</button>
        <button data-testid="comments">💬 ${clip.stats.comments}</button>
        <button data-testid="remix">Remix</button>
        <button data-testid="share">Share</button>
        <button data-testid="see-less" title="See less like this">🙈</button>
      </div>
      <div class="comments" hidden></div>
    </div>`;
  const like = el.querySelector("[data-testid=like]");
  like.addEventListener("click", async () => {
    if (!requireLogin()) return;
    const liked = like.classList.toggle("on");
    const count = like.querySelector("span");
    count.textContent = Math.max(0, Number(count.textContent) + (liked ? 1 : -1));
    try { await api(liked ? "PUT" : "DELETE", `/v1/clips/${clip.id}/like`); } catch (e) { toast(e.message); }
  });
  const follow = el.querySelector("[data-testid=follow]");
  if (store.me?.handle === clip.creator.handle) follow.hidden = true;
  follow.addEventListener("click", async () => {
    if (!requireLogin()) return;
    const on = follow.classList.contains("on");
    try {
      await api(on ? "DELETE" : "PUT", `/v1/users/${clip.creator.handle}/follow`);
      follow.classList.toggle("on"); follow.textContent = on ? "Follow" : "Following";
    } catch (e) { toast(e.message); }
  });
  el.querySelector("[data-testid=comments]").addEventListener("click", () => toggleComments(el, clip));
  el.querySelector("[data-testid=remix]").addEventListener("click", () => { location.hash = `#/create?remix=${clip.id}`; });
  el.querySelector("[data-testid=share]").addEventListener("click", async () => {
    if (!requireLogin()) return;
    try {
      const { share_url } = await api("POST", `/v1/clips/${clip.id}/shares`);
      await navigator.clipboard?.writeText(share_url).catch(() => {});
      toast(`Link: ${share_url}`);
    } catch (e) { toast(e.message); }
  });
  el.querySelector("[data-testid=see-less]").addEventListener("click", async () => {
    if (!requireLogin()) return;
    try {
      await api("POST", `/v1/clips/${clip.id}/see-less`);
      el.remove(); toast("Got it: less like this");
    } catch (e) { toast(e.message); }
  });
  const video = el.querySelector("video");
  let watchedFrom = null;
  video.addEventListener("play", () => { watchedFrom = performance.now(); });
  video.addEventListener("pause", () => {
    if (watchedFrom !== null && store.token) {
      api("POST", `/v1/clips/${clip.id}/views`, { watch_ms: Math.round(performance.now() - watchedFrom) }).catch(() => {});
    }
    watchedFrom = null;
  });
  return el;
}

async function toggleComments(el, clip) {
  const box = el.querySelector(".comments");
  box.hidden = !box.hidden;
  if (box.hidden) return;
  const page = await api("GET", `/v1/clips/${clip.id}/comments`);
  box.innerHTML = page.data.map((c) => `<p><b>@${esc(c.author.handle)}</b> ${esc(c.text)}</p>`).join("") +
    `<form data-testid="comment-form"><input name="text" maxlength="500" placeholder="Add a comment" required><button>Post</button></form>`;
  box.querySelector("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!requireLogin()) return;
    try {
      await api("POST", `/v1/clips/${clip.id}/comments`, { text: ev.target.text.value });
      box.hidden = true; toggleComments(el, clip);
    } catch (e) { toast(e.message); }
  });
}

// Autoplay whatever is on screen, pause what scrolled away.
const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const v = entry.target;
    if (entry.isIntersecting) v.play().catch(() => {}); else v.pause();
  }
}, { threshold: 0.6 });

async function renderSteering(box, reload) {
  // "more cats and beaches, less horror": the feed follows these words until cleared.
  let current = null;
  try { current = await api("GET", "/v1/me/feed/steering"); } catch (e) { /* 404: not steered yet */ }
  box.innerHTML = `<form class="steer" data-testid="steering-form">
      <input name="text" maxlength="300" placeholder="Tell your feed what you want: more cats and beaches, less horror"
        value="${esc(current?.text || "")}"><button>Steer</button>
      <button type="button" data-testid="steering-clear" ${current ? "" : "hidden"}>Clear</button></form>`;
  const form = box.querySelector("form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const s = await api("PUT", "/v1/me/feed/steering", { text: form.text.value });
      toast(`More: ${s.more.join(", ") || "—"} · Less: ${s.less.join(", ") || "—"}`); reload();
    } catch (e) { toast(e.message); }
  });
  box.querySelector("[data-testid=steering-clear]").addEventListener("click", async () => {
    try { await api("DELETE", "/v1/me/feed/steering"); form.text.value = ""; reload(); } catch (e) { toast(e.message); }
  });
}

async function renderFeed() {
  view.innerHTML = `<div data-testid="steering"></div><div class="feed" data-testid="feed"></div><button data-testid="more" hidden>More</button>`;
  const feed = view.querySelector(".feed"), more = view.querySelector("[data-testid=more]");
  if (store.token) renderSteering(view.querySelector("[data-testid=steering]"), () => renderFeed());
  let cursor = null;
  async function load() {
    const page = await api("GET", `/v1/feed?limit=10${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const clip of page.data) {
      const card = clipCard(clip); feed.append(card); observer.observe(card.querySelector("video"));
    }
    cursor = page.next_cursor; more.hidden = !cursor;
    if (!page.data.length && !feed.children.length) feed.innerHTML = "<p>No clips yet: create the first one.</p>";
  }
  more.addEventListener("click", load);
  await load();
}

async function renderClip(id) {
  view.innerHTML = "";
  const card = clipCard(await api("GET", `/v1/clips/${id}`));
  view.append(card); observer.observe(card.querySelector("video"));
  const remixes = await api("GET", `/v1/clips/${id}/remixes?limit=30`);
  if (remixes.data.length) {
    const section = document.createElement("section");
    section.dataset.testid = "remixes";
    section.innerHTML = `<h3>Remixes</h3><div class="grid">${remixes.data.map((c) =>
      `<a href="#/clip/${c.id}"><img src="${esc(c.poster_url)}" alt="${esc(c.prompt)}"></a>`).join("")}</div>`;
    view.append(section);
  }
}

function renderLogin() {
  view.innerHTML = `
    <form data-testid="signup-form"><h2>Sign up</h2>
      <input name="handle" placeholder="@handle" required minlength="3" maxlength="30">
      <input name="display_name" placeholder="Display name" required maxlength="60">
      <input name="password" type="password" placeholder="Password (10+ characters)" required minlength="10">
      <button class="primary">Create account</button><p class="error"></p></form>
    <form data-testid="login-form"><h2>Log in</h2>
      <input name="handle" placeholder="@handle" required>
      <input name="password" type="password" placeholder="Password" required>
      <button class="primary">Log in</button><p class="error"></p></form>`;
  for (const [testid, path] of [["signup-form", "/v1/auth/signup"], ["login-form", "/v1/auth/login"]]) {
    const form = view.querySelector(`[data-testid=${testid}]`);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = Object.fromEntries(new FormData(form));
      try { store.save(await api("POST", path, body)); renderNav(); location.hash = "#/"; }
      catch (e) { form.querySelector(".error").textContent = e.message; }
    });
  }
}

async function followStatus(promptId, onStatus) {
  // Server-sent events read through fetch, so the bearer token stays in a header.
  const resp = await fetch(`/v1/prompts/${promptId}/events`, { headers: { Authorization: `Bearer ${store.token}` } });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (data) onStatus(JSON.parse(data.slice(6)));
    }
  }
}

function renderCreate(params) {
  if (!requireLogin()) return;
  const remix = params.get("remix");
  view.innerHTML = `
    <form data-testid="prompt-form"><h2>${remix ? "Remix a clip" : "Create a clip"}</h2>
      <textarea name="text" rows="4" maxlength="1000" required placeholder="a fox dancing in the snow at night"></textarea>
      <small>Cast yourself or a friend with their @handle (up to two people, with their consent).</small>
      <button class="primary">Generate</button>
      <p class="status" data-testid="prompt-status"></p><p class="error"></p></form>`;
  const form = view.querySelector("form"), status = form.querySelector(".status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelector(".error").textContent = "";
    try {
      const body = { text: form.text.value, ...(remix ? { parent_clip_id: remix } : {}) };
      const prompt = await api("POST", "/v1/prompts", body);
      status.textContent = prompt.status;
      await followStatus(prompt.id, (p) => {
        status.textContent = p.status + (p.reason ? `: ${p.reason}` : "");
        if (p.status === "published") {
          status.innerHTML = `published — <a href="#/clip/${p.clip_id}" data-testid="open-clip">watch it</a>`;
        } else if (p.status === "in_review") {
          status.textContent = "in review: a moderator looks at it before anyone else can see it";
        }
      });
    } catch (e) { form.querySelector(".error").textContent = e.message; }
  });
}

async function renderProfile(handle) {
  const p = await api("GET", `/v1/users/${encodeURIComponent(handle)}`);
  const clips = await api("GET", `/v1/users/${encodeURIComponent(handle)}/clips?limit=30`);
  const rel = p.relationship;
  view.innerHTML = `
    <section class="profile" data-testid="profile">
      <h1>${esc(p.display_name)}</h1><div class="handle" data-testid="profile-handle">@${esc(p.handle)}</div>
      <p>${esc(p.bio)}</p>
      <div class="counts">
        <span><b data-testid="followers">${p.counts.followers}</b> followers</span>
        <span><b>${p.counts.following}</b> following</span>
        <span><b>${p.counts.likes_received}</b> likes</span>
        <span><b>${p.counts.clips}</b> clips</span>
      </div>
      ${rel ? `<button data-testid="profile-follow" class="${rel.following ? "on" : ""}">${rel.following ? "Following" : "Follow"}</button>
               ${rel.friends ? "<span> · friends</span>" : ""}` : ""}
      <div class="grid">${clips.data.map((c) => `<a href="#/clip/${c.id}"><img src="${esc(c.poster_url)}" alt="${esc(c.prompt)}"></a>`).join("")}</div>
    </section>`;
  view.querySelector("[data-testid=profile-follow]")?.addEventListener("click", async () => {
    try { await api(rel.following ? "DELETE" : "PUT", `/v1/users/${p.handle}/follow`); renderProfile(handle); }
    catch (e) { toast(e.message); }
  });
}

const CONSENT = { only_me: "Only me", approved: "People I approve", mutuals: "Mutual follows", everyone: "Everyone" };

async function privateImage(url) {
  // Owner-only images need the bearer token, so they are fetched and shown as blob URLs.
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${store.token}` } });
  return resp.ok ? URL.createObjectURL(await resp.blob()) : "";
}

async function renderCameo() {
  if (!requireLogin()) return;
  let cameo = null;
  try { cameo = await api("GET", "/v1/me/cameo"); } catch (e) { /* none registered yet */ }
  const active = cameo?.active;
  const options = Object.entries(CONSENT)
    .map(([k, v]) => `<option value="${k}" ${cameo?.consent === k ? "selected" : ""}>${v}</option>`).join("");
  view.innerHTML = `
    <form data-testid="cameo-form"><h2>Your cameo</h2>
      <p>${active ? "People can cast you by your @handle, as you allow here." :
        "Register a clear picture of yourself to appear in clips — yours, or your friends' if you allow it."}</p>
      ${active ? `<img class="likeness" data-testid="cameo-image" alt="your likeness">` : ""}
      <label>${active ? "Replace picture" : "Picture"} <input type="file" name="image" accept="image/jpeg,image/png,image/webp" ${active ? "" : "required"}></label>
      <label>Who may cast you <select name="consent">${options}</select></label>
      <label>Restrictions <input name="restrictions" maxlength="500" value="${esc(cameo?.restrictions || "")}"
        placeholder="no political content, nothing scary"></label>
      ${active && cameo.restriction_rules.length ? `<small data-testid="cameo-rules">Read as: ${cameo.restriction_rules.map(esc).join(", ")}</small>` : ""}
      <button class="primary">${active ? "Save" : "Register my cameo"}</button>
      ${active ? `<button type="button" data-testid="cameo-revoke">Turn off my cameo</button>` : ""}
      <p class="error"></p></form>
    <section data-testid="appearances"><h2>Clips that cast you</h2><div class="appearances"></div></section>`;
  const form = view.querySelector("form");
  if (active) privateImage("/v1/me/cameo/image").then((u) => { form.querySelector(".likeness").src = u; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    form.querySelector(".error").textContent = "";
    try {
      if (form.image.files.length || !active) {
        const data = new FormData(form);
        await api("PUT", "/v1/me/cameo", data);
      } else {
        await api("PATCH", "/v1/me/cameo", { consent: form.consent.value, restrictions: form.restrictions.value });
      }
      toast("Saved"); renderCameo();
    } catch (e) { form.querySelector(".error").textContent = e.message; }
  });
  form.querySelector("[data-testid=cameo-revoke]")?.addEventListener("click", async () => {
    try {
      const r = await api("DELETE", "/v1/me/cameo");
      toast(`Cameo turned off; ${r.clips_taken_down} clip(s) taken down`); renderCameo();
    } catch (e) { toast(e.message); }
  });
  const list = view.querySelector(".appearances");
  const seen = await api("GET", "/v1/me/cameo/appearances?limit=50");
  if (!seen.data.length) { list.innerHTML = "<p>None yet.</p>"; return; }
  for (const a of seen.data) {
    const row = document.createElement("div");
    row.className = "appearance"; row.dataset.testid = "appearance";
    row.innerHTML = `<img alt=""><div><b>@${esc(a.creator.handle)}</b>: ${esc(a.text)}
      <div class="status" data-testid="appearance-status">${esc(a.status)}</div>
      ${a.public_url ? `<a href="#/clip/${a.clip_id}">open</a>` : ""}
      ${a.vetoed || a.status === "removed" ? "" : `<button data-testid="appearance-remove">Remove</button>`}</div>`;
    if (a.poster_url) privateImage(a.poster_url).then((u) => { row.querySelector("img").src = u; });
    row.querySelector("[data-testid=appearance-remove]")?.addEventListener("click", async () => {
      try { await api("DELETE", `/v1/me/cameo/appearances/${a.prompt_id}`); toast("Removed"); renderCameo(); }
      catch (e) { toast(e.message); }
    });
    list.append(row);
  }
}

const POLICY_REASONS = ["no violation", "sexual content", "violence or gore", "self-harm", "hate",
  "harassment or bullying", "illegal activity", "minor safety", "impersonation or non-consensual likeness", "spam"];

async function renderReviewQueue() {
  if (!requireLogin()) return;
  const [queue, stats] = await Promise.all([api("GET", "/v1/review/queue"), api("GET", "/v1/review/stats")]);
  view.innerHTML = `
    <section data-testid="review-queue"><h2>Review queue</h2>
      <p class="muted" data-testid="queue-stats">${stats.depth} waiting${stats.oldest_open_age_s != null ?
        ` · oldest ${Math.round(stats.oldest_open_age_s / 60)} min` : ""} · ${stats.decided_last_24h} decided today</p>
      ${queue.data.length ? "" : "<p>Nothing to review.</p>"}
      ${queue.data.map((i) => `<a class="queue-item sev${i.severity}" href="#/review/${i.id}" data-testid="queue-item">
        <b>${esc(i.kind)}</b> · severity ${i.severity}${i.escalated ? " · escalated" : ""} · reach ${i.reach ?? 0}
        <div>${esc(i.reasons.slice(0, 2).join("; "))}</div></a>`).join("")}
    </section>`;
}

async function renderReviewItem(id) {
  if (!requireLogin()) return;
  const item = await api("GET", `/v1/review/items/${id}`);
  const mine = item.status === "claimed" && item.claimed_by === store.me?.id;
  const checks = item.safety_checks.map((c) => `<li>${c.passed ? "✓" : "✗"} ${esc(c.name)}: ${esc(c.detail)}</li>`).join("");
  view.innerHTML = `
    <section class="review" data-testid="review-item"><h2>${esc(item.kind)} · severity ${item.severity}</h2>
      <div class="media hidden-media" data-testid="review-media"><img alt="clip poster"></div>
      <button data-testid="reveal">Reveal</button>
      <p><b>Prompt:</b> ${esc(item.prompt)}</p>
      <p><b>Clip status:</b> <span data-testid="review-clip-status">${esc(item.clip_status)}</span></p>
      <p><b>Reasons:</b> ${esc(item.reasons.join("; "))}</p>
      <ul class="checks">${checks}</ul>
      <p><b>@${esc(item.creator.handle)}</b>: ${item.creator.followers} followers, ${item.creator.clips_published} published,
        ${item.creator.clips_removed} removed, ${item.creator.clips_blocked} blocked, ${item.creator.reports_received} reports</p>
      ${item.status === "decided" ? `<p class="status" data-testid="review-decided">decided: ${esc(item.decision)} (${esc(item.policy_reason)})</p>` :
        mine ? `<form data-testid="decision-form">
          <label>Policy reason <select name="policy_reason">${POLICY_REASONS.map((r) => `<option>${esc(r)}</option>`).join("")}</select></label>
          <input name="note" maxlength="500" placeholder="note (optional)">
          <div class="actions"><button name="decision" value="approve">Approve</button>
          <button name="decision" value="remove" class="primary" data-testid="remove">Remove</button>
          <button name="decision" value="escalate">Escalate</button></div><p class="error"></p></form>` :
        `<button class="primary" data-testid="claim">Claim</button>`}
      <h3>Audit</h3><ul>${item.audit.map((a) => `<li>${esc(a.created_at)} ${esc(a.actor_kind)} ${esc(a.action)} ${esc(a.reason)}</li>`).join("")}</ul>
    </section>`;
  // Blurred and greyscale until the reviewer chooses to look.
  privateImage(item.poster_url).then((u) => { view.querySelector(".media img").src = u; });
  view.querySelector("[data-testid=reveal]").addEventListener("click", async () => {
    const box = view.querySelector(".media");
    box.classList.remove("hidden-media");
    const src = await privateImage(item.video_url);
    box.innerHTML = `<video src="${src}" controls muted playsinline data-testid="review-video"></video>`;
  });
  view.querySelector("[data-testid=claim]")?.addEventListener("click", async () => {
    try { await api("POST", `/v1/review/items/${id}/claim`); renderReviewItem(id); } catch (e) { toast(e.message); }
  });
  const form = view.querySelector("[data-testid=decision-form]");
  form?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", `/v1/review/items/${id}/decision`, {
        decision: ev.submitter.value, policy_reason: form.policy_reason.value, note: form.note.value,
      });
      toast("Decided"); renderReviewItem(id);
    } catch (e) { form.querySelector(".error").textContent = e.message; }
  });
}

async function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path.startsWith("/@")) await renderProfile(path.slice(2));
    else if (path.startsWith("/clip/")) await renderClip(path.slice(6));
    else if (path === "/login") renderLogin();
    else if (path === "/create") renderCreate(params);
    else if (path === "/cameo") await renderCameo();
    else if (path === "/review") await renderReviewQueue();
    else if (path.startsWith("/review/")) await renderReviewItem(path.slice(8));
    else await renderFeed();
  } catch (e) { view.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

window.addEventListener("hashchange", route);
renderNav();
route();
