// The TOTP popup when a popup blocker stops it.
//
// Measured here: Debian's headless Chromium 156 opens even script-initiated popups with
// Playwright's `--disable-popup-blocking` dropped (and with every default flag dropped), so no
// real blocker can be had. A blocker's whole effect on the page is that `window.open` returns
// null; that is played here, and the page must detect it.
import { expect, test } from "@playwright/test";
import { SANDBOX, passwordStep, registerWithAppTotp, signOut } from "./helpers";

test("a blocked popup is detected and a plain link is offered", async ({ page }) => {
  const { email } = await registerWithAppTotp(page, "blocked");
  await signOut(page);
  await page.addInitScript(() => {
    window.open = () => null;
  });
  await passwordStep(page, email);
  await page.getByRole("button", { name: "Get code from TOTP provider" }).click();
  const link = page.getByRole("link", { name: "Open the TOTP provider" });
  await expect(link).toBeVisible();
  await expect(page.getByText("Your browser blocked the popup.", { exact: false })).toBeVisible();
  await expect(link).toHaveAttribute("href", new RegExp(`^${SANDBOX}/dashboard/simple-totp\\?serviceName=Stepgate&`));
  // Only the window we opened may send codes, so the tab the link opens has no opener: its
  // "Send code" then tells the user to type the code instead of sending into the void.
  await expect(link).toHaveAttribute("rel", "noopener");
  await expect(page.getByLabel("Verification code")).toBeEditable();
});
