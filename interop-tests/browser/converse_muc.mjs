// converse.js in Debian's Chromium (headless, driven by puppeteer-core): logs in, joins a room
// (the page does both), waits for a text from the room, answers, and reads its occupants.
// Prints one JSON object a line on stdout for the test to follow:
//   {"event": "joined"}, {"event": "seen", "text": ...}, {"event": "sent"},
//   {"event": "occupants", "nicks": [...]}, {"event": "error", "message": ...}
//
// Usage: node converse_muc.mjs <page url> <room jid> <text to wait for> <text to send>

import puppeteer from "puppeteer-core";

const [url, room, awaited, answer] = process.argv.slice(2);
const say = (object) => console.log(JSON.stringify(object));
const TIMEOUT = 60_000;

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  page.on("console", (message) => console.error(`page: ${message.text()}`));
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(url);
  // The room's view, once converse.js has joined it.
  await page.waitForFunction(
    (jid) => [...document.querySelectorAll("converse-muc")].some((el) => el.getAttribute("jid") === jid
      && el.querySelector(".chat-textarea")),
    { timeout: TIMEOUT },
    room,
  );
  say({ event: "joined" });
  const texts = () => page.evaluate(
    () => [...document.querySelectorAll(".chat-msg__text")].map((el) => el.textContent.trim()),
  );
  await page.waitForFunction(
    (text) => [...document.querySelectorAll(".chat-msg__text")].some((el) => el.textContent.includes(text)),
    { timeout: TIMEOUT },
    awaited,
  );
  say({ event: "seen", text: (await texts()).find((text) => text.includes(awaited)) });
  await page.type("converse-muc .chat-textarea", answer);
  await page.keyboard.press("Enter");
  // Shown once the room reflects it.
  await page.waitForFunction(
    (text) => [...document.querySelectorAll(".chat-msg__text")].some((el) => el.textContent.includes(text)),
    { timeout: TIMEOUT },
    answer,
  );
  say({ event: "sent" });
  const nicks = await page.evaluate(
    () => [...document.querySelectorAll(".occupant-nick")].map((el) => el.textContent.trim()),
  );
  say({ event: "occupants", nicks });
} catch (error) {
  say({ event: "error", message: String(error) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
