// The Koywe page's only script: links into Airflow's own pages, and the trigger form.
// It talks to nothing but this Airflow's public REST API (/api/v2), with the signed-in user's own
// session cookie: no token is stored or read here, and Airflow checks every permission itself.
"use strict";

(function () {
  const airflowRoot = document.body.dataset.airflowRoot || "";

  // The page runs in Airflow's iframe (sandbox without top navigation). A link to one of Airflow's own
  // pages is opened in Airflow's single-page app through its history, like its own links are; outside
  // the iframe (the page opened on its own) it is a plain link.
  function openInAirflow(href) {
    try {
      const top = window.top;
      if (top && top !== window && top.location.origin === window.location.origin) {
        const state = top.history.state || {};
        top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: (state.idx || 0) + 1 }, "", href);
        top.dispatchEvent(new PopStateEvent("popstate", { state: top.history.state }));
        return true;
      }
    } catch (err) {
      // another origin or a stricter sandbox: fall back to the plain link
    }
    return false;
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("a.airflow");
    if (link && openInAirflow(link.getAttribute("href"))) event.preventDefault();
  });

  const form = document.getElementById("trigger-form");
  if (!form) return;
  const dagId = form.dataset.dagId;
  const prefill = JSON.parse(form.dataset.prefill || "{}");
  const holder = document.getElementById("params");
  const result = document.getElementById("trigger-result");
  const api = `${airflowRoot}/api/v2`;
  const types = {};

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function typeOf(schema) {
    const t = Array.isArray(schema.type) ? schema.type.filter((x) => x !== "null") : [schema.type];
    return t[0] || (schema.enum ? "string" : "string");
  }

  function detail(body) {
    if (!body) return "";
    if (typeof body.detail === "string") return body.detail;
    return JSON.stringify(body.detail ?? body);
  }

  function field(name, spec) {
    const schema = spec.schema || {};
    const type = typeOf(schema);
    types[name] = { type, nullable: Array.isArray(schema.type) && schema.type.includes("null") };
    const given = prefill[name];
    let value = spec.value;
    if (given !== undefined) {
      if (type === "array") value = given.flatMap((v) => v.split("\n")).filter((v) => v !== "");
      else if (type === "boolean") value = ["true", "1", "on", "yes"].includes(String(given[0]).toLowerCase());
      else value = given[0];
    }
    const title = schema.title || name;
    const help = spec.description || schema.description || "";
    const id = `param-${name}`;
    let input;
    if (type === "boolean") {
      input = el("input", { type: "checkbox", id, name, checked: !!value });
      return el("div", { class: "param" }, el("label", { class: "check" }, input, el("span", { text: title })), help ? el("small", { text: help }) : null);
    }
    if (Array.isArray(schema.enum)) {
      input = el("select", { id, name });
      for (const option of schema.enum) {
        if (option === null) continue;
        input.append(el("option", { value: option, selected: String(option) === String(value ?? ""), text: option }));
      }
    } else if (type === "array") {
      input = el("textarea", { id, name, rows: 3 });
      input.value = (value || []).join("\n");
    } else if (type === "object") {
      input = el("textarea", { id, name, rows: 4 });
      input.value = value ? JSON.stringify(value, null, 2) : "";
    } else {
      input = el("input", { id, name, type: type === "number" || type === "integer" ? "number" : "text", step: type === "number" ? "any" : null });
      input.value = value ?? "";
    }
    return el("div", { class: "param" }, el("label", { for: id }, el("span", { text: title })), input, help ? el("small", { text: type === "array" && !/per line/i.test(help) ? `${help} (one per line)` : help }) : null);
  }

  function conf() {
    const out = {};
    for (const [name, { type, nullable }] of Object.entries(types)) {
      // only the DAG's Params go into the run's conf (not the note or the unpause box)
      const input = form.elements.namedItem(name);
      if (type === "boolean") { out[name] = input.checked; continue; }
      const raw = input.value.trim();
      if (type === "array") out[name] = raw ? raw.split("\n").map((v) => v.trim()).filter((v) => v) : [];
      else if (type === "object") out[name] = raw ? JSON.parse(raw) : (nullable ? null : {});
      else if (type === "number" || type === "integer") out[name] = raw === "" ? null : Number(raw);
      else out[name] = raw === "" && nullable ? null : raw;
    }
    return out;
  }

  async function load() {
    const response = await fetch(`${api}/dags/${encodeURIComponent(dagId)}/details`, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    holder.replaceChildren();
    if (response.status === 404) {
      holder.append(el("p", { class: "error", text: `Airflow has no DAG ${dagId} (it is not deployed, or not parsed yet).` }));
      form.querySelector("button[type=submit]").disabled = true;
      return;
    }
    if (!response.ok) {
      holder.append(el("p", { class: "error", text: `Airflow answered ${response.status}: ${detail(body)}` }));
      form.querySelector("button[type=submit]").disabled = true;
      return;
    }
    for (const [name, spec] of Object.entries(body.params || {})) holder.append(field(name, spec));
    if (body.is_paused) {
      // As Airflow's own trigger form does ("Unpause on trigger"): a run of a paused DAG would wait.
      const box = el("input", { type: "checkbox", id: "unpause", name: "__unpause", checked: true });
      holder.append(el("div", { class: "param" }, el("label", { class: "check" }, box,
        el("span", { text: `Unpause ${dagId} (it is paused: the run would wait until it is unpaused)` }))));
    }
    form.dataset.ready = "1";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    let payload;
    try {
      payload = { logical_date: null, conf: conf(), note: form.elements.namedItem("__note").value || null };
    } catch (err) {
      result.append(el("p", { class: "error", text: `A field is not valid JSON: ${err.message}` }));
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const unpause = form.elements.namedItem("__unpause");
      if (unpause && unpause.checked) {
        const patched = await fetch(`${api}/dags/${encodeURIComponent(dagId)}`, {
          method: "PATCH",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ is_paused: false }),
        });
        if (!patched.ok) {
          const why = await patched.json().catch(() => null);
          result.append(el("p", { class: "error", text: `Airflow refused to unpause ${dagId} (${patched.status}): ${detail(why)}` }));
          return;
        }
      }
      const response = await fetch(`${api}/dags/${encodeURIComponent(dagId)}/dagRuns`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(payload),
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        result.append(el("p", { class: "error", text: `Airflow refused (${response.status}): ${detail(body)}` }));
        return;
      }
      const runHref = `${airflowRoot}/dags/${encodeURIComponent(dagId)}/runs/${encodeURIComponent(body.dag_run_id)}`;
      const link = el("a", { class: "airflow", href: runHref, text: "open it in Airflow" });
      result.append(el("p", { class: "ok", id: "trigger-ok" }, `Run ${body.dag_run_id} of ${dagId} is ${body.state}: `, link));
    } finally {
      button.disabled = form.dataset.denied === "1";
    }
  });

  load().catch((err) => holder.replaceChildren(el("p", { class: "error", text: `Could not read ${dagId}'s Params: ${err}` })));
})();
