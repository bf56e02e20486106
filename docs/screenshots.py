"""Refreshes the docs' MLflow UI screenshots from a real sweep shown by a real `mlflow ui`.
(docs/training.md and docs/sweeps-and-compare.md show them.)

    apt-get install chromium chromium-driver      # Debian; any Chrome + matching chromedriver works
    pip install -e ".[docs]"                      # selenium
    python docs/screenshots.py                    # ~2 min on 2 CPU cores; writes docs/img/*.png

It runs a small 3-LR sweep (`debug=smoke`, a few epochs) into a temporary sqlite store,
serves it with `mlflow ui` on a free loopback port, and drives headless Chromium through
the views the docs show: the sweep as one expandable parent row with its children, the
children's selection-score curves side by side, and the mask images of one run.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

IMG_DIR = Path(__file__).resolve().parent / "img"
LEARNING_RATES = "1e-3,3e-3,1e-2"
SWEEP = ["debug=smoke", "trainer.epochs=4", "trainer.steps_per_epoch=4", "tracking.experiment_name=lr_sweep",
         "tracking.register_as=membranes", "tracking.system_metrics=1"]
WINDOW = (1500, 900)


def run_sweep(store: str, workdir: Path) -> None:
    """Trains the demo sweep (real training, tiny model) into `store`."""
    subprocess.run([sys.executable, "-m", "segexp", "train", "-m", f"optimizer.lr={LEARNING_RATES}", *SWEEP,
                    f"tracking.uri={store}", f"hydra.sweep.dir={workdir / 'sweep'}"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(store: str, port: int) -> subprocess.Popen:
    """Starts `mlflow ui` on 127.0.0.1:port and waits until it answers /health."""
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                           "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return ui
        except OSError:
            time.sleep(0.5)
    ui.kill()
    raise RuntimeError(f"mlflow ui did not answer on port {port} within 90 s")


def browser():
    """Returns a headless Chromium driven by selenium (system chromium + chromedriver)."""
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("docs/screenshots.py needs chromium and chromedriver on PATH "
                         "(Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def sweep_ids(store: str) -> tuple[str, str, str]:
    """Returns (experiment id, parent run id, best child run id) of the demo sweep."""
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("lr_sweep")
    (parent,) = [run for run in client.search_runs([experiment.experiment_id]) if "sweep_dir" in run.data.tags]
    return experiment.experiment_id, parent.info.run_id, parent.data.tags["best_child_run_id"]


def wait_for_text(driver, text: str, timeout: float = 60) -> None:
    """Waits until `text` is on the page (the UI renders client-side, after its API calls return)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element("tag name", "body").text)


def click(driver, element) -> None:
    """Clicks through overlays (icons inside buttons intercept selenium's native click)."""
    driver.execute_script("(arguments[0].closest('button,label,a,[role=button]') || arguments[0]).click()", element)


def click_text(driver, text: str) -> None:
    """Clicks the first element whose own text is `text` (a tab, a folder, a file)."""
    click(driver, driver.find_element("xpath", f"//*[normalize-space(text())={text!r}]"))


def tidy(driver) -> None:
    """Closes the assistant panel and folds the sidebar, so the runs get the width."""
    for button in driver.find_elements("css selector", "button[aria-label='Close']"):
        click(driver, button)
    for button in driver.find_elements("css selector", "button[aria-label='Toggle sidebar']"):
        click(driver, button)


def shoot(driver, path: Path, settle: float = 3.0) -> None:
    time.sleep(settle)  # charts and images load after the page
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def shoot_all(driver, base: str, experiment_id: str, parent_id: str, child_id: str, out: Path) -> None:
    """Takes the docs' pictures: the sweep's runs, their selection-score curves, one run's mask panel, its
    overview (dataset inputs, logged model), its augmentation preview and its system metrics."""
    driver.get(f"{base}/#/experiments/{experiment_id}/runs")
    wait_for_text(driver, "sweep optimizer.lr")
    tidy(driver)
    expander = driver.find_element("css selector", "button[data-component-id*='runnamecellrenderer']")
    click(driver, expander)  # the parent row opens to show its children
    wait_for_text(driver, "optimizer.lr=")
    shoot(driver, out / "sweep_runs.png")

    click(driver, driver.find_element("css selector", "input[name='runs-view-mode'][value='CHART']"))
    search = driver.find_element("css selector", "input[placeholder='Search metric charts']")
    search.send_keys("select_v")  # the selection slices' ISBI scores: per-epoch curves and each child's checkpoint
    time.sleep(2)
    metrics = driver.find_element("xpath", "//*[normalize-space(text())='Model metrics']")
    driver.execute_script("arguments[0].scrollIntoView()", metrics)  # past the mask images, to the curves
    shoot(driver, out / "sweep_charts.png", settle=5.0)

    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{child_id}/artifacts")
    wait_for_text(driver, "images")
    click_text(driver, "images")
    time.sleep(2)
    panels = driver.find_elements("xpath", "//*[contains(normalize-space(text()), '.png')]")
    click(driver, panels[-1])  # the last epoch's mask panel, previewed by the UI
    shoot(driver, out / "run_masks.png", settle=4.0)

    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{child_id}")
    wait_for_text(driver, "Datasets")
    tidy(driver)
    shoot(driver, out / "run_overview.png", settle=4.0)  # datasets (train/select/report), logged model, tags

    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{child_id}/artifacts")
    wait_for_text(driver, "model_card.md")
    click_text(driver, "augmentation_preview.png")
    shoot(driver, out / "run_aug_preview.png", settle=4.0)

    driver.get(f"{base}/#/experiments/{experiment_id}/runs/{child_id}/system-metrics")
    wait_for_text(driver, "cpu_utilization")
    section = driver.find_elements("xpath", "//*[contains(normalize-space(text()), 'System metrics')]")[-1]
    driver.execute_script("arguments[0].scrollIntoView()", section)  # past the mask images, to the charts
    shoot(driver, out / "run_system_metrics.png", settle=5.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMG_DIR)
    parser.add_argument("--keep", type=Path, default=None, help="work here instead of a temporary directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="segexp_screens_"))
    store = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    run_sweep(store, workdir)
    experiment_id, parent_id, child_id = sweep_ids(store)
    port = free_port()
    ui = start_ui(store, port)
    driver = browser()
    try:
        shoot_all(driver, f"http://127.0.0.1:{port}", experiment_id, parent_id, child_id, args.out)
    finally:
        driver.quit()
        ui.terminate()
        ui.wait(timeout=30)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"screenshots written to {args.out}")


if __name__ == "__main__":
    main()
