// kbai pages: copy-to-clipboard, confirmations, the custom expiration date and its policy limit.
// No inline scripts (CSP).
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

  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy-target]");
    if (button) {
      event.preventDefault();
      copy(button);
    }
  });

  // <form data-confirm="..."> asks before it submits. "{name}" in the message becomes the data-say text
  // of the checked radio button called name (e.g. the grace period picked in the rotate form).
  function confirmation(form, message) {
    return message.replace(/\{([a-z_]+)\}/g, function (all, name) {
      const picked = form.querySelector('input[type="radio"][name="' + name + '"]:checked');
      return picked && picked.dataset.say ? picked.dataset.say : all;
    });
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    const message = form.dataset ? form.dataset.confirm : null;
    if (message && !window.confirm(confirmation(form, message))) {
      event.preventDefault();
    }
  });

  // A date past the policy's limit: the browser refuses it with the policy's own words (data-max-message).
  function checkLimit(field) {
    if (field.dataset && field.dataset.maxMessage !== undefined) {
      field.setCustomValidity("");
      if (field.validity.rangeOverflow) field.setCustomValidity(field.dataset.maxMessage);
    }
  }

  // Picking a custom date selects the "Custom date" choice.
  document.addEventListener("input", function (event) {
    const field = event.target;
    checkLimit(field);
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
      checkLimit(custom);
    }
  });

  // After a token is shown, move focus to it so keyboard and screen-reader users land there.
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-max-message]").forEach(checkLimit);
    const card = document.querySelector(".secret-card");
    if (card) {
      card.setAttribute("tabindex", "-1");
      card.focus();
    }
  });
})();
