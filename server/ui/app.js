// The cedarkey console. Every action is a command of the HTTP API, sent to /ui/api/<command> with the session
// cookie and the CSRF header: the server decides, the page only shows. Values from the API are only ever set
// as text (textContent, attributes), never parsed as HTML.
"use strict";

(() => {
  const main = document.getElementById("main");
  const top = document.getElementById("top");
  const dialog = document.getElementById("confirm");

  /** The signed-in caller ({caller, "access-id", "expires-at", csrf}) or null. The token stays in the cookie. */
  let session = null;
  /** What the next page shows once: a confirmation, or a new access key. */
  let flash = null;
  let renderCount = 0;

  const CAPABILITIES = ["read", "create", "update", "delete", "list", "deny"];
  const DECIDABLE = CAPABILITIES.filter((c) => c !== "deny");
  const RULE_TYPES = [
    ["item-rule", "Secrets & Keys"],
    ["role-rule", "Access Roles"],
    ["auth-method-rule", "Auth Methods"],
  ];
  const RULE_TYPE_LABEL = Object.fromEntries(RULE_TYPES);
  const AM_TYPE_LABEL = { aws_iam: "AWS IAM", access_key: "Access Key" };
  const LIST_HINT = "Several values: one per line, or comma-separated.";

  // The auth method form's fields, in the story's words; `aws` marks those of AWS IAM methods only.
  const AM_FIELDS = [
    { flag: "name", label: "Name", required: true, hint: "For example iamAuth1, or a path such as /team/iamAuth1." },
    { flag: "bound-aws-account-id", label: "Bound AWS Account ID", kind: "list", aws: true },
    { flag: "bound-arn", label: "Bound ARN", kind: "list", aws: true, hint: "ARNs, * allowed. " + LIST_HINT },
    { flag: "bound-role-name", label: "Bound Role Name", kind: "list", aws: true },
    { flag: "bound-role-id", label: "Bound Role ID", kind: "list", aws: true },
    { flag: "bound-resource-id", label: "Bound Resource ID", kind: "list", aws: true, hint: "EC2 instance ids. " + LIST_HINT },
    { flag: "bound-user-name", label: "Bound User Name", kind: "list", aws: true },
    { flag: "bound-user-id", label: "Bound User ID", kind: "list", aws: true },
    { flag: "sts-url", label: "STS URL", aws: true, hint: "Empty: https://sts.amazonaws.com/" },
    { flag: "bound-ips", label: "Bound IPs", kind: "list", hint: "Addresses or CIDR blocks a login may come from. " + LIST_HINT },
    { flag: "jwt-ttl", label: "JWT TTL", kind: "int", hint: "Seconds a token lasts. Empty: 3600." },
    { flag: "max-ttl", label: "Max TTL", kind: "int", hint: "Seconds a token may live from its login, renewals included. Empty or 0: 8 times the JWT TTL." },
    { flag: "access-expires", label: "Access Expires", kind: "int", hint: "Unix time after which no login succeeds. Empty or 0: never." },
  ];

  // --- building the page ------------------------------------------------------------------------------------

  /** An element: attributes (on* become listeners, text sets textContent), then children (strings as text). */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function link(hash, text, attrs = {}) {
    return h("a", { href: hash, ...attrs }, text);
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  const enc = encodeURIComponent;
  const time = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "");

  function box(kind, ...children) {
    return h("div", { class: `box ${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
  }

  function errorBox(error) {
    return box("error", h("strong", {}, error.message), " ", h("code", { class: "code" }, `${error.status || ""} ${error.code}`.trim()));
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "empty" }, empty);
    return h(
      "div",
      { class: "table-wrap" },
      h("table", {}, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))
    );
  }

  function details(pairs) {
    return h(
      "dl",
      { class: "facts" },
      pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v, id]) => [h("dt", {}, k), h("dd", { id }, v)])
    );
  }

  function pageHeader(title, ...actions) {
    return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title), h("div", { class: "actions" }, actions));
  }

  function button(text, onclick, kind = "") {
    return h("button", { type: "button", class: kind, onclick }, text);
  }

  /** Runs an action from a button: busy while it runs, its error shown in `where`. */
  async function busy(btn, label, action, where) {
    const before = btn.textContent;
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    btn.textContent = label;
    try {
      await action();
    } catch (error) {
      if (!(error instanceof SessionEnded)) where.replaceChildren(errorBox(error));
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
      btn.textContent = before;
    }
  }

  function confirmed(text, ok = "Delete") {
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = ok;
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
  }

  // --- talking to the server --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** Thrown after a 401: the page has already gone back to signing in. */
  class SessionEnded extends Error {}

  async function post(url, body) {
    const headers = { "content-type": "application/json" };
    if (session) headers["x-csrf-token"] = session.csrf;
    let response;
    try {
      response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin", cache: "no-store" });
    } catch {
      throw new ApiError(0, "NetworkError", "the server could not be reached");
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.error) || "HttpError", (data && data.message) || `HTTP ${response.status}`);
    }
    return data;
  }

  async function call(command, body) {
    try {
      return await post(`/ui/api/${enc(command)}`, body);
    } catch (error) {
      if (error.status === 401) {
        session = null;
        signIn("Your session has ended: sign in again.");
        throw new SessionEnded();
      }
      throw error;
    }
  }

  // --- forms ------------------------------------------------------------------------------------------------

  function splitList(text) {
    return text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  }

  /**
   * A form of labelled fields. `fields`: {flag, label, kind: text|list|int|secret|textarea|select|checks|password,
   * options, hint, required, readonly, value}. `submit(values)` runs the action; an API error naming a flag
   * ("flag: message") is shown beside that field, any other above the button.
   */
  function makeForm(prefix, fields, submitLabel, busyLabel, submit, extra = []) {
    const inputs = {};
    const errors = {};
    const general = h("div", { class: "form-error" });
    const form = h("form", { class: "form", novalidate: true });

    for (const f of fields) {
      const id = `${prefix}-${f.flag}`;
      const describedBy = [f.hint || f.kind === "list" ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(" ");
      const hint = f.hint || (f.kind === "list" ? LIST_HINT : null);
      let control;
      if (f.kind === "checks") {
        control = h(
          "fieldset",
          { class: "checks", id, "aria-describedby": describedBy },
          h("legend", {}, f.label),
          f.options.map((option) =>
            h("label", { class: "check" }, h("input", { type: "checkbox", name: f.flag, value: option, checked: (f.value || []).includes(option) }), option)
          )
        );
      } else if (f.kind === "checkbox") {
        control = h("input", { type: "checkbox", id, name: f.flag, checked: Boolean(f.value), "aria-describedby": describedBy });
      } else if (f.kind === "select") {
        control = h(
          "select",
          { id, name: f.flag, "aria-describedby": describedBy },
          f.options.map(([value, text]) => h("option", { value, selected: value === f.value }, text))
        );
      } else if (["list", "textarea", "secret"].includes(f.kind)) {
        control = h("textarea", {
          id,
          name: f.flag,
          rows: f.kind === "list" ? 2 : 4,
          spellcheck: "false",
          autocomplete: "off",
          class: f.kind === "secret" ? "secret" : null,
          readonly: f.readonly,
          "aria-describedby": describedBy,
        });
        control.value = Array.isArray(f.value) ? f.value.join("\n") : f.value || "";
      } else {
        control = h("input", {
          id,
          name: f.flag,
          type: f.kind === "password" ? "password" : "text",
          inputmode: f.kind === "int" ? "numeric" : null,
          autocomplete: f.autocomplete || "off",
          spellcheck: "false",
          required: f.required,
          "aria-required": f.required ? "true" : null,
          readonly: f.readonly,
          placeholder: f.placeholder,
          "aria-describedby": describedBy,
        });
        control.value = f.value === undefined || f.value === null ? "" : String(f.value);
      }
      inputs[f.flag] = control;
      errors[f.flag] = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
      const label = f.kind === "checks" ? null : h("label", { for: id }, f.label);
      const row = f.kind === "checkbox" ? [h("div", { class: "check" }, control, label)] : [label, control];
      form.append(h("div", { class: "field" }, ...row, hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null, errors[f.flag]));
    }

    const submitButton = h("button", { type: "submit", class: "primary" }, submitLabel);
    form.append(general, h("div", { class: "actions" }, submitButton, extra));

    function clearErrors() {
      general.replaceChildren();
      for (const [flag, el] of Object.entries(errors)) {
        el.hidden = true;
        el.textContent = "";
        inputs[flag].removeAttribute("aria-invalid");
      }
    }

    function showError(flag, message) {
      errors[flag].textContent = message;
      errors[flag].hidden = false;
      inputs[flag].setAttribute("aria-invalid", "true");
      (inputs[flag].querySelector("input") || inputs[flag]).focus();
    }

    function values() {
      const out = {};
      for (const f of fields) {
        const control = inputs[f.flag];
        if (f.kind === "checks") out[f.flag] = [...control.querySelectorAll("input:checked")].map((i) => i.value);
        else if (f.kind === "checkbox") out[f.flag] = control.checked;
        else if (f.kind === "list") out[f.flag] = splitList(control.value);
        else if (f.kind === "int") {
          const text = control.value.trim();
          if (text && !/^\d+$/.test(text)) throw new ApiError(400, "BadRequest", `${f.flag}: must be a whole number`);
          out[f.flag] = text ? Number(text) : null;
        } else if (f.kind === "secret" || f.kind === "password") out[f.flag] = control.value;
        else out[f.flag] = control.value.trim();
      }
      return out;
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const before = submitButton.textContent;
      submitButton.disabled = true;
      submitButton.setAttribute("aria-busy", "true");
      form.setAttribute("aria-busy", "true");
      submitButton.textContent = busyLabel;
      try {
        for (const f of fields) {
          if (f.required && !inputs[f.flag].value.trim()) throw new ApiError(400, "BadRequest", `${f.flag}: required`);
        }
        await submit(values());
      } catch (error) {
        if (error instanceof SessionEnded) return;
        const named = /^([a-z][a-z-]*): (.*)$/s.exec(error.message || "");
        if (named && errors[named[1]]) showError(named[1], named[2]);
        else general.replaceChildren(errorBox(error));
      } finally {
        submitButton.disabled = false;
        submitButton.removeAttribute("aria-busy");
        form.removeAttribute("aria-busy");
        submitButton.textContent = before;
      }
    });
    return form;
  }

  /** A form behind a button: the button shows it, Cancel hides it again. */
  function revealed(openLabel, build) {
    const holder = h("div", { class: "revealed", hidden: true });
    const opener = button(openLabel, () => {
      const cancel = button("Cancel", () => {
        holder.hidden = true;
        holder.replaceChildren();
        opener.hidden = false;
        opener.focus();
      }, "secondary");
      holder.replaceChildren(build(cancel));
      holder.hidden = false;
      opener.hidden = true;
      const first = holder.querySelector("input, select, textarea");
      if (first) first.focus();
    });
    return [opener, holder];
  }

  // --- auth methods -----------------------------------------------------------------------------------------

  function bindingsOf(am) {
    return AM_FIELDS.filter((f) => f.kind === "list" && (am[f.flag] || []).length).map((f) => `${f.label}: ${am[f.flag].join(", ")}`);
  }

  async function authMethodsPage() {
    const answer = await call("list-auth-methods");
    const rows = answer["auth-methods"].map((am) =>
      h(
        "tr",
        {},
        h("td", {}, link(`#/auth-method/${enc(am.name)}`, am.name)),
        h("td", {}, AM_TYPE_LABEL[am.type] || am.type),
        h("td", {}, h("code", {}, am["access-id"])),
        h("td", { class: "bindings" }, bindingsOf(am).join("; ") || "—")
      )
    );
    return [
      "Auth Methods",
      pageHeader("Auth Methods", button("New", () => go("#/auth-methods/new"), "primary")),
      table(["Name", "Type", "Access ID", "Bindings"], rows, "No auth method you may list."),
    ];
  }

  function newAuthMethodChooser() {
    return [
      "New auth method",
      pageHeader("New auth method"),
      h("p", {}, "Choose how machines and people log in with it."),
      h(
        "div",
        { class: "choices" },
        h("button", { type: "button", class: "choice", onclick: () => go("#/auth-methods/new/aws_iam") }, h("strong", {}, "AWS IAM"), h("span", {}, "Machines and services prove their IAM role; no stored secret.")),
        h("button", { type: "button", class: "choice", onclick: () => go("#/auth-methods/new/access_key") }, h("strong", {}, "Access Key"), h("span", {}, "An access id and a key, shown once."))
      ),
      h("p", {}, link("#/auth-methods", "Cancel")),
    ];
  }

  function amFields(type, am) {
    return AM_FIELDS.filter((f) => type === "aws_iam" || !f.aws).map((f) => ({
      ...f,
      kind: f.kind || "text",
      readonly: am && f.flag === "name",
      value: am ? am[f.flag] : undefined,
    }));
  }

  /**
   * A "New ..." page: a form whose filled-in fields (empty ones left out, so the server's defaults apply) are
   * sent to `command`; `shown(made)` gives the message to flash and the page to go to with the answer.
   */
  function createPage(title, prefix, fields, command, cancelHref, shown) {
    const form = makeForm(prefix, fields, "Save", "Saving…", async (values) => {
      const body = {};
      for (const [flag, value] of Object.entries(values)) {
        if (value === null || value === "" || (Array.isArray(value) && !value.length)) continue;
        body[flag] = value;
      }
      const [message, href] = shown(await call(command, body));
      flash = message;
      go(href);
    }, link(cancelHref, "Cancel", { class: "button secondary" }));
    return [title, pageHeader(title), form];
  }

  function newAuthMethodPage(type) {
    const command = type === "aws_iam" ? "create-auth-method-aws-iam" : "create-auth-method";
    return createPage(`New ${AM_TYPE_LABEL[type]} auth method`, "am", amFields(type, null), command, "#/auth-methods/new", (made) => [
      { created: made },
      `#/auth-method/${enc(made.name)}`,
    ]);
  }

  async function authMethodPage(name) {
    const am = await call("get-auth-method", { name });
    const created = flash && flash.created && flash.created.name === am.name ? flash.created : null;
    const notices = h("div");
    const keyBox = created && created["access-key"]
      ? box(
          "warning key",
          h("p", {}, h("strong", {}, "Access Key: this key is shown once. Copy it now: it cannot be shown again.")),
          h("pre", { class: "secret", id: "access-key" }, created["access-key"])
        )
      : null;
    const removeButton = button("Delete", async () => {
      if (!(await confirmed(`Delete the auth method ${am.name}? Logins with it will be refused and its tokens end.`))) return;
      await busy(removeButton, "Deleting…", async () => {
        await call("delete-auth-method", { name: am.name });
        flash = { text: `Auth method ${am.name} deleted.` };
        go("#/auth-methods");
      }, notices);
    }, "danger");
    const facts = [
      ["Type", AM_TYPE_LABEL[am.type] || am.type],
      ["Access ID", h("code", {}, am["access-id"]), "access-id"],
      ...AM_FIELDS.filter((f) => f.kind === "list" && (am[f.flag] || []).length).map((f) => [f.label, am[f.flag].join(", ")]),
      ["STS URL", am["sts-url"]],
      ["JWT TTL", `${am["jwt-ttl"]} s`],
      ["Max TTL", am["max-ttl"] ? `${am["max-ttl"]} s` : `${8 * am["jwt-ttl"]} s (8 times the JWT TTL)`],
      ["Access Expires", am["access-expires"] ? time(am["access-expires"]) : "never"],
    ];
    return [
      am.name,
      pageHeader(am.name, link(`#/auth-method/${enc(am.name)}/edit`, "Edit", { class: "button" }), removeButton),
      created ? box("ok", "Auth method saved.") : null,
      keyBox,
      am.warning ? box("warning", h("strong", {}, "Least privilege: "), am.warning) : null,
      notices,
      details(facts),
      h("p", {}, link("#/auth-methods", "All auth methods")),
    ];
  }

  async function editAuthMethodPage(name) {
    const am = await call("get-auth-method", { name });
    const command = am.type === "aws_iam" ? "update-auth-method-aws-iam" : "update-auth-method";
    const fields = amFields(am.type, am);
    const form = makeForm("am", fields, "Save", "Saving…", async (values) => {
      const body = { name: am.name };
      for (const f of fields) {
        if (f.flag === "name") continue;
        const now = values[f.flag];
        const was = am[f.flag];
        if (f.kind === "list" ? now.join("\n") !== (was || []).join("\n") : String(now ?? "") !== String(was ?? "")) {
          if (now !== null) body[f.flag] = now;
          else if (f.kind === "int") body[f.flag] = f.flag === "jwt-ttl" ? 3600 : 0;
        }
      }
      if (Object.keys(body).length === 1) throw new ApiError(400, "NothingChanged", "nothing changed");
      await call(command, body);
      flash = { text: `Auth method ${am.name} saved.` };
      go(`#/auth-method/${enc(am.name)}`);
    }, link(`#/auth-method/${enc(am.name)}`, "Cancel", { class: "button secondary" }));
    return [`Edit ${am.name}`, pageHeader(`Edit ${am.name}`), form];
  }

  // --- access roles -----------------------------------------------------------------------------------------

  function subClaimsText(claims) {
    return Object.entries(claims || {}).map(([k, patterns]) => `${k}=${patterns.join(",")}`).join("; ");
  }

  async function rolesPage() {
    const answer = await call("list-roles");
    const rows = answer.roles.map((role) =>
      h(
        "tr",
        {},
        h("td", {}, link(`#/role/${enc(role.name)}`, role.name)),
        h("td", {}, role.description || ""),
        h("td", { class: "num" }, String(role.associations.length)),
        h("td", { class: "num" }, String(role.rules.length))
      )
    );
    return [
      "Access Roles",
      pageHeader("Access Roles", button("New", () => go("#/roles/new"), "primary")),
      table(["Name", "Description", "Associations", "Rules"], rows, "No access role you may list."),
    ];
  }

  function newRolePage() {
    const fields = [
      { flag: "name", label: "Name", required: true, hint: "For example dev-readers." },
      { flag: "description", label: "Description", kind: "textarea" },
    ];
    return createPage("New access role", "role", fields, "create-role", "#/roles", (made) => [
      { text: `Access role ${made.name} created.` },
      `#/role/${enc(made.name)}`,
    ]);
  }

  async function rolePage(name) {
    const role = await call("get-role", { name });
    const notices = h("div");
    const reload = (text) => {
      flash = { text };
      go(`#/role/${enc(role.name)}`);
    };

    const [describe, describeForm] = revealed("Edit description", (cancel) =>
      makeForm("desc", [{ flag: "description", label: "Description", kind: "textarea", value: role.description }], "Save", "Saving…", async (values) => {
        await call("update-role", { name: role.name, description: values.description });
        reload("Description saved.");
      }, cancel)
    );

    const [associate, associateForm] = revealed("Associate", (cancel) => {
      const holder = h("div", {}, h("p", { class: "hint" }, "Loading auth methods…"));
      call("list-auth-methods").then(
        (answer) => {
          const options = answer["auth-methods"].map((am) => [am.name, `${am.name} (${AM_TYPE_LABEL[am.type] || am.type})`]);
          holder.replaceChildren(
            makeForm(
              "assoc",
              [
                options.length
                  ? { flag: "am-name", label: "Auth method", kind: "select", options }
                  : { flag: "am-name", label: "Auth method", required: true, hint: "No auth method you may list: type its name." },
                { flag: "sub-claim", label: "Sub-claims", kind: "list", hint: "Optional. One attribute=pattern per line, for example role_name=dev-*." },
              ],
              "Save",
              "Saving…",
              async (values) => {
                await call("assoc-role-am", { "role-name": role.name, "am-name": values["am-name"], "sub-claim": values["sub-claim"] });
                reload(`Associated with ${values["am-name"]}.`);
              },
              cancel
            )
          );
          const first = holder.querySelector("select, input");
          if (first) first.focus();
        },
        (error) => {
          if (!(error instanceof SessionEnded)) holder.replaceChildren(errorBox(error), cancel);
        }
      );
      return holder;
    });

    const [addRule, ruleForm] = revealed("Add permission", (cancel) =>
      makeForm(
        "rule",
        [
          { flag: "rule-type", label: "Rule type", kind: "select", options: RULE_TYPES, value: "item-rule" },
          { flag: "path", label: "Path", required: true, placeholder: "/dev/*", hint: "A folder such as /dev/* or one object's path." },
          { flag: "capability", label: "Capabilities", kind: "checks", options: CAPABILITIES },
        ],
        "Add",
        "Adding…",
        async (values) => {
          if (!values.capability.length) throw new ApiError(400, "BadRequest", "capability: choose at least one");
          await call("set-role-rule", { "role-name": role.name, ...values });
          reload(`Permission on ${values.path} added.`);
        },
        cancel
      )
    );

    function removeButton(text, question, action, done) {
      const btn = button(text, async () => {
        if (!(await confirmed(question, text))) return;
        await busy(btn, "Removing…", async () => {
          await action();
          reload(done);
        }, notices);
      }, "danger small");
      return btn;
    }

    const associations = role.associations.map((a) =>
      h(
        "tr",
        {},
        h("td", {}, link(`#/auth-method/${enc(a["am-name"])}`, a["am-name"])),
        h("td", {}, subClaimsText(a["sub-claims"]) || "—"),
        h("td", {}, h("code", {}, a["assoc-id"])),
        h("td", {}, removeButton("Remove", `Remove the association of ${role.name} with ${a["am-name"]}?`, () => call("delete-assoc", { "assoc-id": a["assoc-id"] }), "Association removed."))
      )
    );
    const rules = role.rules.map((r) =>
      h(
        "tr",
        {},
        h("td", {}, RULE_TYPE_LABEL[r["rule-type"]] || r["rule-type"]),
        h("td", {}, h("code", {}, r.path)),
        h("td", {}, r.capabilities.join(", ")),
        h("td", {}, removeButton("Remove", `Remove the ${RULE_TYPE_LABEL[r["rule-type"]] || r["rule-type"]} rule on ${r.path}?`, () => call("delete-role-rule", { "role-name": role.name, path: r.path, "rule-type": r["rule-type"] }), "Rule removed."))
      )
    );
    const deleteRole = button("Delete", async () => {
      if (!(await confirmed(`Delete the access role ${role.name}, its associations and its rules?`))) return;
      await busy(deleteRole, "Deleting…", async () => {
        await call("delete-role", { name: role.name });
        flash = { text: `Access role ${role.name} deleted.` };
        go("#/roles");
      }, notices);
    }, "danger");

    return [
      role.name,
      pageHeader(role.name, deleteRole),
      notices,
      h("section", {}, h("p", { class: "description" }, role.description || "No description."), describe, describeForm),
      h(
        "section",
        { "aria-labelledby": "assoc-title" },
        h("div", { class: "section-head" }, h("h2", { id: "assoc-title" }, "Associations"), associate),
        associateForm,
        table(["Auth method", "Sub-claims", "Association ID", ""], associations, "Not associated with any auth method.")
      ),
      h(
        "section",
        { "aria-labelledby": "rules-title" },
        h("div", { class: "section-head" }, h("h2", { id: "rules-title" }, "Rules"), addRule),
        ruleForm,
        table(["Rule type", "Path", "Capabilities", ""], rules, "No rules: this role grants nothing yet.")
      ),
      h("p", {}, link("#/roles", "All access roles")),
    ];
  }

  // --- items ------------------------------------------------------------------------------------------------

  const folderOf = (name) => name.slice(0, name.lastIndexOf("/") + 1) || "/";

  async function itemsPage() {
    const answer = await call("list-items");
    const byFolder = new Map();
    for (const item of answer.items) {
      const folder = folderOf(item.item_name);
      if (!byFolder.has(folder)) byFolder.set(folder, []);
      byFolder.get(folder).push(item);
    }
    const folders = [...byFolder.keys()].sort();
    const sections = folders.map((folder) =>
      h(
        "section",
        { class: "folder" },
        h("h2", {}, h("span", { class: "folder-icon", "aria-hidden": "true" }), folder),
        table(
          ["Name", "Type", "Version", "Updated"],
          byFolder.get(folder).map((item) =>
            h(
              "tr",
              {},
              h("td", {}, link(`#/item/${enc(item.item_name)}`, item.item_name.slice(folder.length) || item.item_name)),
              h("td", {}, item.item_type === "STATIC_SECRET" ? "Static secret" : item.item_type),
              h("td", { class: "num" }, String(item.version)),
              h("td", {}, time(item.updated_at))
            )
          ),
          ""
        )
      )
    );
    return [
      "Items",
      pageHeader("Items", button("New secret", () => go("#/items/new"), "primary")),
      sections.length ? sections : h("p", { class: "empty" }, "No item you may list."),
    ];
  }

  function newItemPage() {
    const fields = [
      { flag: "name", label: "Name", required: true, placeholder: "/dev/db-password", hint: "A path: its folders come from it." },
      { flag: "value", label: "Value", kind: "secret", required: true },
      { flag: "description", label: "Description" },
    ];
    return createPage("New secret", "item", fields, "create-secret", "#/items", (made) => [
      { text: `Secret ${made.name} saved.` },
      `#/item/${enc(made.name)}`,
    ]);
  }

  async function itemPage(name) {
    const item = await call("describe-item", { name });
    const notices = h("div");
    const value = h("pre", { class: "secret", id: "secret-value", hidden: true });
    const reveal = button("Reveal value", async () => {
      if (!value.hidden) {
        value.hidden = true;
        value.textContent = "";
        reveal.textContent = "Reveal value";
        return;
      }
      await busy(reveal, "Reading…", async () => {
        const answer = await call("get-secret-value", { name: item.item_name });
        value.textContent = answer.value;
        value.hidden = false;
      }, notices);
      if (!value.hidden) reveal.textContent = "Hide value";
    });
    const [update, updateForm] = revealed("Update value", (cancel) =>
      makeForm(
        "update",
        [
          { flag: "value", label: "New value", kind: "secret", required: true },
          { flag: "keep-prev-version", label: "Keep the previous version", kind: "checkbox", value: true, hint: `Unchecked, the new value overwrites version ${item.version}.` },
        ],
        "Save",
        "Saving…",
        async (values) => {
          const keep = values["keep-prev-version"] ? "true" : "false";
          const answer = await call("update-secret-val", { name: item.item_name, value: values.value, "keep-prev-version": keep, cas: item.version });
          flash = { text: `New value saved as version ${answer.version}.` };
          go(`#/item/${enc(item.item_name)}`);
        },
        cancel
      )
    );
    const versions = (item.versions || []).map((v) => {
      const latest = v.version === item.version;
      const back = latest
        ? h("span", { class: "muted" }, "latest")
        : button(`Roll back to ${v.version}`, async () => {
            if (!(await confirmed(`Make version ${v.version}'s value the new latest version of ${item.item_name}?`, "Roll back"))) return;
            await busy(back, "Rolling back…", async () => {
              const answer = await call("rollback-secret", { name: item.item_name, version: v.version });
              flash = { text: `Version ${v.version} is now version ${answer.version}.` };
              go(`#/item/${enc(item.item_name)}`);
            }, notices);
          }, "secondary small");
      return h("tr", {}, h("td", { class: "num" }, String(v.version)), h("td", {}, time(v.created_at)), h("td", {}, v.created_by || ""), h("td", {}, back));
    });
    const remove = button("Delete", async () => {
      if (!(await confirmed(`Delete the secret ${item.item_name}? Its value is gone for good.`))) return;
      await busy(remove, "Deleting…", async () => {
        await call("delete-item", { name: item.item_name });
        flash = { text: `Secret ${item.item_name} deleted.` };
        go("#/items");
      }, notices);
    }, "danger");
    return [
      item.item_name,
      pageHeader(item.item_name, remove),
      notices,
      details([
        ["Type", item.item_type === "STATIC_SECRET" ? "Static secret" : item.item_type],
        ["Folder", folderOf(item.item_name)],
        ["Description", item.description],
        ["Version", String(item.version)],
        ["Versions kept", `at most ${item.max_versions}`],
        ["Created", time(item.created_at)],
        ["Updated", time(item.updated_at)],
      ]),
      h("section", { "aria-labelledby": "value-title" }, h("h2", { id: "value-title" }, "Value"), h("div", { class: "actions" }, reveal, update), value, updateForm),
      h("section", { "aria-labelledby": "versions-title" }, h("h2", { id: "versions-title" }, "Versions"), table(["Version", "Created", "By", ""], versions, "No versions.")),
      h("p", {}, link("#/items", "All items")),
    ];
  }

  // --- audit ------------------------------------------------------------------------------------------------

  const AUDIT_SHOWN = new Set(["time", "event", "caller", "access_id", "outcome"]);

  async function auditPage() {
    const answer = await call("list-audit-events", { limit: 200 });
    const rows = answer.events.map((e) =>
      h(
        "tr",
        { class: e.outcome && e.outcome !== "success" ? "refused" : null },
        h("td", { class: "nowrap" }, time(e.time)),
        h("td", {}, e.event),
        h("td", {}, e.caller || e.access_id || ""),
        h("td", {}, e.outcome || ""),
        h(
          "td",
          { class: "bindings" },
          Object.entries(e)
            .filter(([k]) => !AUDIT_SHOWN.has(k))
            .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
            .join("  ")
        )
      )
    );
    return [
      "Audit",
      pageHeader("Audit", button("Refresh", () => render())),
      h("p", { class: "hint" }, "The most recent events this server recorded that you may read, newest first. The full log is the server's audit.log."),
      table(["Time", "Event", "Caller", "Outcome", "Details"], rows, "No events yet."),
    ];
  }

  // --- who can ----------------------------------------------------------------------------------------------

  const questionFields = () => [
    { flag: "path", label: "Path", required: true, placeholder: "/dev/db-password" },
    { flag: "capability", label: "Capability", kind: "select", options: DECIDABLE.map((c) => [c, c]), value: "read" },
    { flag: "rule-type", label: "Rule type", kind: "select", options: RULE_TYPES, value: "item-rule" },
  ];

  function decisionView(answer) {
    const policies = answer.determining.map((p) =>
      h("tr", {}, h("td", {}, h("code", {}, p.id)), h("td", {}, p.kind), h("td", {}, p.name || ""), h("td", {}, p.path ? `${p.path} (${(p.capabilities || []).join(", ")})` : ""))
    );
    return h(
      "div",
      { class: "answer" },
      h("p", { class: `decision ${answer.decision}` }, h("strong", {}, answer.decision === "allow" ? "Allowed" : "Denied"), ": ", answer.why),
      answer.roles && answer.roles.length ? h("p", {}, "Roles: ", answer.roles.join(", ")) : null,
      h("h3", {}, "Policies that decided"),
      table(["Policy", "Kind", "Name", "Rule"], policies, "None: nothing permits this, so it is denied."),
      answer.cedar ? h("details", {}, h("summary", {}, "Cedar policies considered"), h("pre", { class: "cedar" }, answer.cedar)) : null
    );
  }

  function whoCanPage() {
    const whoOut = h("div", { "aria-live": "polite" });
    const canOut = h("div", { "aria-live": "polite" });
    const explainOut = h("div", { "aria-live": "polite" });
    const whoForm = makeForm("who", questionFields(), "Ask", "Asking…", async (values) => {
      const answer = await call("who-can", values);
      const rows = answer.routes.map((r) =>
        h(
          "tr",
          { class: r.blocked ? "refused" : null },
          h("td", {}, r["auth-method"].name, " ", h("span", { class: "muted" }, `(${AM_TYPE_LABEL[r["auth-method"].type] || r["auth-method"].type})`)),
          h("td", {}, r.role),
          h("td", {}, subClaimsText(r.association && r.association["sub-claims"]) || "—"),
          h("td", {}, `${r.rule.path} (${r.rule.capabilities.join(", ")})`),
          h("td", {}, r.blocked ? "blocked by a deny" : "grants")
        )
      );
      whoOut.replaceChildren(h("p", {}, answer.summary), table(["Auth method", "Role", "Sub-claims", "Rule", ""], rows, "No route grants this."));
    });
    const canForm = makeForm(
      "can",
      [
        { flag: "identity", label: "Identity (JSON)", kind: "textarea", required: true, value: '{"auth_method": "iamAuth1", "account": "123456789012", "role_name": "dev-role"}', hint: "The attributes a login would carry: auth_method, account, role_name, arn, …" },
        ...questionFields(),
      ],
      "Decide",
      "Deciding…",
      async (values) => canOut.replaceChildren(decisionView(await call("can", values)))
    );
    const explainForm = makeForm("explain", questionFields(), "Explain", "Explaining…", async (values) =>
      explainOut.replaceChildren(decisionView(await call("explain", values)))
    );
    return [
      "Who can",
      pageHeader("Who can"),
      h("section", {}, h("h2", {}, "Who can do this?"), h("p", { class: "hint" }, "Every auth method, role and rule that grants a capability on a path."), whoForm, whoOut),
      h("section", {}, h("h2", {}, "Can this identity?"), h("p", { class: "hint" }, "The decision for an identity that has not logged in, and the policies that made it."), canForm, canOut),
      h("section", {}, h("h2", {}, "Why may I?"), h("p", { class: "hint" }, "Your own decision, explained."), explainForm, explainOut),
    ];
  }

  // --- signing in and out -----------------------------------------------------------------------------------

  function signIn(message) {
    top.hidden = true;
    const form = makeForm(
      "signin",
      [
        { flag: "access-id", label: "Access ID", required: true, placeholder: "p-…", autocomplete: "username" },
        { flag: "access-key", label: "Access Key", kind: "password", required: true, autocomplete: "current-password" },
      ],
      "Sign in",
      "Signing in…",
      async (values) => {
        session = await post("/ui/session", { "access-type": "access_key", ...values });
        render();
      }
    );
    document.title = "Sign in · cedarkey";
    main.replaceChildren(
      h(
        "div",
        { class: "signin" },
        h("div", { class: "brand big" }, h("img", { src: "icon.svg", alt: "", width: 40, height: 40 }), h("span", {}, "cedarkey")),
        h("h1", { tabindex: "-1" }, "Sign in"),
        message ? box("info", message) : null,
        h("p", { class: "hint" }, "With an access id and key: the administrator's, printed when the server first started, or any Access Key auth method's."),
        form
      )
    );
    main.querySelector("input").focus();
  }

  document.getElementById("sign-out").addEventListener("click", async () => {
    try {
      await post("/ui/session/end", {});
    } catch {
      // The cookie is cleared either way; an already ended token is what signing out wanted.
    }
    session = null;
    signIn("Signed out: your token was revoked.");
  });

  // --- routing ----------------------------------------------------------------------------------------------

  const ROUTES = [
    [/^#\/auth-methods$/, authMethodsPage],
    [/^#\/auth-methods\/new$/, newAuthMethodChooser],
    [/^#\/auth-methods\/new\/(aws_iam|access_key)$/, newAuthMethodPage],
    [/^#\/auth-method\/([^/]+)$/, authMethodPage],
    [/^#\/auth-method\/([^/]+)\/edit$/, editAuthMethodPage],
    [/^#\/roles$/, rolesPage],
    [/^#\/roles\/new$/, newRolePage],
    [/^#\/role\/([^/]+)$/, rolePage],
    [/^#\/items$/, itemsPage],
    [/^#\/items\/new$/, newItemPage],
    [/^#\/item\/([^/]+)$/, itemPage],
    [/^#\/audit$/, auditPage],
    [/^#\/who-can$/, whoCanPage],
  ];

  function notFound() {
    return ["Not found", pageHeader("Not found"), h("p", {}, "No such page. "), link("#/auth-methods", "Auth Methods")];
  }

  function markSection(hash) {
    for (const a of top.querySelectorAll("nav a")) {
      const section = a.getAttribute("data-section");
      if (hash.startsWith(`#/${section}`)) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  async function render() {
    if (!session) return signIn();
    top.hidden = false;
    document.getElementById("caller").textContent = session.caller;
    const hash = location.hash || "#/auth-methods";
    markSection(hash);
    const count = ++renderCount;
    let page = notFound;
    let args = [];
    for (const [pattern, handler] of ROUTES) {
      const match = pattern.exec(hash);
      if (match) {
        page = handler;
        try {
          args = match.slice(1).map(decodeURIComponent);
        } catch {
          page = notFound;
        }
        break;
      }
    }
    const shown = flash && flash.text ? box("ok", flash.text) : null;
    main.setAttribute("aria-busy", "true");
    let title;
    let content;
    try {
      [title, ...content] = await page(...args);
    } catch (error) {
      if (error instanceof SessionEnded) return;
      [title, content] = ["Refused", [pageHeader(error.status === 404 ? "Not found" : "Refused"), errorBox(error)]];
    }
    if (count !== renderCount) return; // a later navigation won
    flash = null;
    main.removeAttribute("aria-busy");
    document.title = `${title} · cedarkey`;
    main.replaceChildren(...[shown, ...content].filter(Boolean));
    main.querySelector("h1").focus();
  }

  window.addEventListener("hashchange", render);

  fetch("/ui/session", { credentials: "same-origin", cache: "no-store" })
    .then((r) => r.json())
    .then((answer) => {
      session = answer["signed-in"] ? answer : null;
      render();
    })
    .catch(() => signIn("The server could not be reached."));
})();
