// The lab: send {model, agent, message} and show the OpenAI stream as it arrives, then the call's
// route, tokens and charge from the final `alumia` frame. Text goes in with textContent only.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("lab-form");
  if (!form) return;
  const agentSelect = document.getElementById("lab-agent");
  const modelSelect = document.getElementById("lab-model");
  const message = document.getElementById("lab-message");
  const send = document.getElementById("lab-send");
  const transcript = document.getElementById("transcript");
  const empty = document.getElementById("lab-empty");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const labels = { byok: "BYOK", platform: "platform", free: "free" };
  let chosenModel = modelSelect.value;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Picking an agent uses its model (shown, locked) and its system prompt (applied by the server).
  agentSelect.addEventListener("change", () => {
    const option = agentSelect.selectedOptions[0];
    if (option && option.dataset.model) {
      modelSelect.value = option.dataset.model;
      modelSelect.disabled = true;
    } else {
      modelSelect.disabled = false;
      modelSelect.value = chosenModel;
    }
  });
  modelSelect.addEventListener("change", () => { chosenModel = modelSelect.value; });
  if (agentSelect.value) agentSelect.dispatchEvent(new Event("change"));

  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  function showMeta(answer, info) {
    const meta = el("div", "meta");
    const badge = el("span", "badge " + info.route, labels[info.route] || info.route);
    badge.title = "route";
    meta.append(badge, el("span", "", `${info.inputTokens} tokens in · ${info.outputTokens} out`));
    let cost = info.charged + " from your balance";
    if (info.byok) cost = info.charged + " — billed by your provider";
    else if (info.route === "free") cost = info.charged + " — free model";
    const charged = el("span", "cost", cost);
    charged.dataset.microcents = String(info.chargedMicrocents);
    meta.append(charged);
    answer.append(meta);
  }

  function showError(answer, text) {
    const error = el("p", "error", text);
    error.setAttribute("role", "alert");
    answer.append(error);
  }

  // Feed SSE text; returns the unconsumed tail. Each `data:` payload is JSON or [DONE].
  function consume(buffer, answer, output) {
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (!data || data === "[DONE]") continue;
        let chunk;
        try { chunk = JSON.parse(data); } catch { continue; }
        if (chunk.alumia) showMeta(answer, chunk.alumia);
        else if (chunk.error) showError(answer, chunk.error.message || "the call failed");
        else for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          if (delta.content) output.textContent += delta.content;
        }
      }
    }
    return buffer;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = message.value;
    if (!text.trim()) { message.focus(); return; }
    const agent = agentSelect.value;
    const model = modelSelect.value;
    const agentName = agent ? agentSelect.selectedOptions[0].textContent.split(" — ")[0] : "";

    empty.hidden = true;
    const turn = el("li", "turn");
    const asked = el("div", "asked");
    const said = el("p", "said", text);
    asked.append(el("div", "who", "You → " + (agentName ? agentName + " (" + model + ")" : model)), said);
    const answer = el("div", "answer");
    answer.setAttribute("aria-busy", "true");
    const output = el("p", "said");
    answer.append(output);
    turn.append(asked, answer);
    transcript.append(turn);
    message.value = "";
    send.disabled = true;

    try {
      const response = await fetch(form.dataset.chatUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ model: agent ? "" : model, agent: agent, message: text }),
        credentials: "same-origin",
      });
      if (!response.ok || !response.body) {
        let problem = { message: `the call failed (HTTP ${response.status})` };
        try { problem = (await response.json()).error || problem; } catch { /* not JSON */ }
        // A message the server refused for looking like a key is not kept on the screen either.
        if (problem.code === "KEY_NOT_ALLOWED") said.textContent = "(not sent)";
        showError(answer, problem.message);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer = consume(buffer + decoder.decode(value, { stream: true }), answer, output);
      }
      consume(buffer + decoder.decode() + "\n\n", answer, output);
    } catch (error) {
      showError(answer, "the connection was lost before the answer was complete");
    } finally {
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      message.focus();
    }
  });
});
