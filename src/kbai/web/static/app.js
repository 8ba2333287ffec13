// kbai pages: copy-to-clipboard, confirmation and rotate dialogs, form messages in kbai's words, the custom
// expiration date and its policy limit. No inline scripts (CSP).
"use strict";

(function () {
  function fallbackCopy(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    return ok;
  }

  async function copy(button) {
    const el = document.querySelector(button.dataset.copyTarget);
    if (!el) return;
    const text = el.textContent.trim();
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); ok = true; } catch (e) { ok = false; }
    }
    if (!ok) ok = fallbackCopy(el);
    const card = button.closest(".secret-card");
    const status = card ? card.querySelector(".copy-status") : null;
    const original = button.dataset.label || button.textContent;
    button.dataset.label = original;
    button.textContent = ok ? "Copied" : "Select and copy";
    button.classList.toggle("is-done", ok);
    if (status) status.textContent = ok ? "Copied to your clipboard." : "Your browser blocked copying: select the text and copy it.";
    window.setTimeout(function () { button.textContent = original; button.classList.remove("is-done"); }, 2500);
  }

  // ---- dialogs ----------------------------------------------------------------------------------
  // Buttons open and close <dialog>s declaratively (commandfor/command; Esc and a click outside close them,
  // closedby="any"). Where the browser lacks those, the same happens here. Only one dialog is open at a time.
  const nativeCommands = "command" in HTMLButtonElement.prototype && "commandForElement" in HTMLButtonElement.prototype;
  const nativeLightDismiss = "closedBy" in HTMLDialogElement.prototype;

  function openModal(dialog) {
    document.querySelectorAll("dialog[open]").forEach(function (d) { if (d !== dialog) d.close(); });
    if (!dialog.open) dialog.showModal();
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (button) {
      event.preventDefault();
      copy(button);
      return;
    }
    if (!nativeCommands) {
      const trigger = event.target.closest("button[commandfor]");
      if (trigger) {
        const dialog = document.getElementById(trigger.getAttribute("commandfor"));
        const command = trigger.getAttribute("command");
        if (dialog && command === "show-modal") { event.preventDefault(); openModal(dialog); }
        if (dialog && command === "close") { event.preventDefault(); dialog.close(); }
        return;
      }
    }
    // A click on the backdrop (outside the dialog's box) closes it.
    if (!nativeLightDismiss && event.target instanceof HTMLDialogElement && event.target.open) {
      const box = event.target.getBoundingClientRect();
      const inside = event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
      if (!inside) event.target.close();
    }
  });

  // Opening one dialog closes any other (the native command opens it; this keeps them exclusive).
  document.addEventListener("toggle", function (event) {
    const dialog = event.target;
    if (dialog instanceof HTMLDialogElement && dialog.open) {
      document.querySelectorAll("dialog[open]").forEach(function (d) { if (d !== dialog) d.close(); });
    }
  }, true);

  // <form data-confirm-title="..." data-confirm="..." data-confirm-button="..."> asks in the page's dialog
  // (which names what is at stake) before it submits; without JavaScript the form submits directly.
  const confirmed = new WeakSet();
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (!form.dataset || form.dataset.confirm === undefined || confirmed.has(form)) return;
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog) return;
    event.preventDefault();
    dialog.querySelector("#confirm-dialog-title").textContent = form.dataset.confirmTitle || "Are you sure?";
    dialog.querySelector("#confirm-dialog-text").textContent = form.dataset.confirm;
    dialog.querySelector("[data-confirm-button]").textContent = form.dataset.confirmButton || "Confirm";
    dialog.returnValue = "";
    dialog.onclose = function () {
      dialog.onclose = null;
      if (dialog.returnValue === "confirm") {
        confirmed.add(form);
        form.requestSubmit();
      }
    };
    openModal(dialog);
  });

  // ---- form messages -------------------------------------------------------------------------------
  // The browser's own messages, said better: data-missing for an empty required field, data-mismatch for
  // a badly formed one, data-short for one too short, data-max-message for a date past the policy's limit.
  function explain(field) {
    if (!field.dataset || !field.validity) return;
    field.setCustomValidity("");
    const v = field.validity;
    if (v.valueMissing && field.dataset.missing) field.setCustomValidity(field.dataset.missing);
    else if (v.typeMismatch && field.dataset.mismatch) field.setCustomValidity(field.dataset.mismatch);
    else if (v.tooShort && field.dataset.short) field.setCustomValidity(field.dataset.short);
    else if (v.rangeOverflow && field.dataset.maxMessage) field.setCustomValidity(field.dataset.maxMessage);
  }

  document.addEventListener("invalid", function (event) { explain(event.target); }, true);

  // Picking a custom date selects the "Custom date" choice.
  document.addEventListener("input", function (event) {
    const field = event.target;
    explain(field);
    if (field.getAttribute("aria-invalid") === "true" && field.tagName === "INPUT" && field.type !== "checkbox" && field.type !== "radio") {
      field.removeAttribute("aria-invalid");
    }
    if (field.dataset && field.dataset.selects && field.value) {
      const radio = document.querySelector(field.dataset.selects);
      if (radio) radio.checked = true;
    }
  });

  // Choosing another expiration clears the custom date, so a date left there never blocks the form.
  document.addEventListener("change", function (event) {
    const radio = event.target;
    if (radio.type !== "radio" || radio.name !== "expiry" || radio.value === "custom" || !radio.form) return;
    const custom = radio.form.querySelector('input[type="date"][data-selects]');
    if (custom) {
      custom.value = "";
      explain(custom);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-max-message]").forEach(explain);
    // After an error, focus is on the first invalid field (autofocus); after a token is shown, on its card,
    // so keyboard and screen-reader users land where the news is.
    const invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid) {
      if (document.activeElement !== invalid) invalid.focus();
      return;
    }
    const card = document.querySelector(".secret-card");
    if (card) {
      card.setAttribute("tabindex", "-1");
      card.focus();
    }
  });
})();
