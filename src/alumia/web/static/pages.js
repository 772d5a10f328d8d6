/* Behaviour of every dashboard page, from a file: the Content-Security-Policy allows no inline script. */
(() => {
  /* The org switcher goes to the same page of the chosen org. */
  const switcher = document.getElementById("org-switcher");
  if (switcher) {
    switcher.addEventListener("change", () => {
      location.href = "/" + switcher.value + "/" + (switcher.dataset.page || "billing");
    });
  }
  /* Forms that undo something ask first. */
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  /* Dialogs: the buttons work without JavaScript (they load the page with the dialog open); with it they open in place. */
  for (const button of document.querySelectorAll("button[data-dialog]")) {
    button.addEventListener("click", (event) => {
      const dialog = document.getElementById(button.dataset.dialog);
      if (!dialog || !dialog.showModal) return;
      event.preventDefault();
      for (const old of dialog.querySelectorAll("[role=alert]")) old.remove();  /* a new try */
      dialog.showModal();
    });
  }
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("close", () => {
      for (const input of dialog.querySelectorAll("input[type=password]")) input.value = "";
    });
    if (dialog.hasAttribute("data-autoopen") && dialog.showModal) { dialog.close(); dialog.showModal(); }
  }
})();
