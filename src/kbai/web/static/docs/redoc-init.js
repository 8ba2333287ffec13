// Starts ReDoc on /redoc (a file, not an inline script, so the page's CSP allows only 'self').
//
// ReDoc's sidebar always shows a logo loaded from Redocly's CDN: nothing on this server, blocked by
// the page's CSP, and unreachable on servers without Internet access. That one image source is
// dropped before it is set (the "API docs by Redocly" link text stays), so the page loads nothing
// from anywhere but this server.
(function () {
  var CDN_LOGO = "https://cdn.redoc.ly/";
  function fromCdn(value) { return String(value).indexOf(CDN_LOGO) === 0; }
  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLImageElement && String(name).toLowerCase() === "src" && fromCdn(value)) return;
    setAttribute.call(this, name, value);
  };
  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: src.enumerable,
    get: src.get,
    set: function (value) { if (!fromCdn(value)) src.set.call(this, value); },
  });
})();

window.addEventListener("DOMContentLoaded", function () {
  Redoc.init(document.body.dataset.openapiUrl, {}, document.getElementById("redoc"));
});
