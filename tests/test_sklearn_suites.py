"""scikit-learn's own tests against keras_gmm.sklearn's estimators.

Two parts:

- scikit-learn's installed mixture test modules
  (``sklearn/mixture/tests/test_gaussian_mixture.py``,
  ``test_bayesian_mixture.py``, ``test_mixture.py``), run by pytest's own
  collection in a subprocess, with ``sklearn.mixture.GaussianMixture`` and
  ``BayesianGaussianMixture`` (and the modules' names) bound to ours by this
  file loaded as a plugin (``-p tests.test_sklearn_suites``). Nothing of
  scikit-learn's test code is copied. Deselected: only the tests that call
  scikit-learn's private functions instead of the estimator
  (:data:`DESELECTED`, each with its reason);
- ``sklearn.utils.estimator_checks.parametrize_with_checks`` on both
  estimators.

The default run keeps a representative fast subset of the modules
(:data:`FAST_SUBSET`: attributes, argument checks, errors and their
messages, fit_predict, every init, warm start and convergence, max_iter=0,
sampling, BIC/AIC, the Bayesian priors and weights); ``pytest -m slow`` runs
every selected test, float32 cases included (the slowest: hundreds of
one-iteration warm-start fits in both test_monotonic_likelihood, the n_init
loops of test_init and test_gaussian_mixture_fit_best_params, the eight
prior x covariance fits of the Bayesian predict and prior tests).
"""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_RESULTS_ENV = "KERAS_GMM_SKLEARN_SUITE_RESULTS"

#: scikit-learn's test modules run against our estimators.
MODULES = {
    "gaussian_mixture": "sklearn.mixture.tests.test_gaussian_mixture",
    "bayesian_mixture": "sklearn.mixture.tests.test_bayesian_mixture",
    "mixture": "sklearn.mixture.tests.test_mixture",
}

_PRIVATE_MATH = "calls scikit-learn's private {} (no estimator involved)"
#: Tests not run, with the reason: they call scikit-learn's private functions
#: or methods instead of the estimator's public behaviour.
DESELECTED = {
    "test_gaussian_mixture.py::test_suffstat_sk_full":
        _PRIVATE_MATH.format("_estimate_gaussian_covariances_full"),
    "test_gaussian_mixture.py::test_suffstat_sk_tied":
        _PRIVATE_MATH.format("_estimate_gaussian_covariances_tied"),
    "test_gaussian_mixture.py::test_suffstat_sk_diag":
        _PRIVATE_MATH.format("_estimate_gaussian_covariances_diag"),
    "test_gaussian_mixture.py::test_gaussian_suffstat_sk_spherical":
        _PRIVATE_MATH.format("_estimate_gaussian_covariances_spherical"),
    "test_gaussian_mixture.py::test_compute_log_det_cholesky":
        _PRIVATE_MATH.format("_compute_log_det_cholesky"),
    "test_gaussian_mixture.py::test_gaussian_mixture_log_probabilities":
        _PRIVATE_MATH.format("_estimate_log_gaussian_prob"),
    "test_gaussian_mixture.py::test_gaussian_mixture_precisions_init":
        "calls the estimator's private _initialize(X, resp) and scikit-learn's "
        "private _set_parameters",
    "test_gaussian_mixture.py::"
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
        "mocks scikit-learn's private _estimate_gaussian_parameters and counts "
        "its calls",
    "test_gaussian_mixture.py::test_gaussian_mixture_array_api_compliance":
        "scikit-learn's array API dispatch through its private "
        "sklearn.utils._array_api helpers (ours computes in TensorFlow)",
    "test_gaussian_mixture.py::"
    "test_gaussian_mixture_raises_where_array_api_not_implemented":
        "scikit-learn's array API dispatch through its private "
        "sklearn.utils._array_api helpers (ours computes in TensorFlow)",
    "test_bayesian_mixture.py::test_log_dirichlet_norm":
        _PRIVATE_MATH.format("_log_dirichlet_norm"),
    "test_bayesian_mixture.py::test_log_wishart_norm":
        _PRIVATE_MATH.format("_log_wishart_norm"),
    "test_bayesian_mixture.py::test_compare_covar_type":
        "calls the estimator's private _check_parameters and "
        "_initialize_parameters",
}

#: The tests of the default (fast) run; the others need ``-m slow``.
FAST_SUBSET = {
    "gaussian_mixture": [
        "test_gaussian_mixture_attributes", "test_check_weights",
        "test_check_means", "test_check_precisions",
        "test_gaussian_mixture_estimate_log_prob_resp",
        "test_gaussian_mixture_predict_predict_proba",
        "test_gaussian_mixture_fit_predict",
        "test_gaussian_mixture_fit_convergence_warning",
        "test_gaussian_mixture_n_parameters", "test_bic_1d_1component",
        "test_gaussian_mixture_aic_bic", "test_gaussian_mixture_verbose",
        "test_warm_start", "test_convergence_detected_with_warm_start",
        "test_score", "test_score_samples", "test_regularisation", "test_sample",
        "test_max_iter_zero", "test_init_means_not_duplicated",
        "test_means_for_all_inits",
        "test_gaussian_mixture_single_component_stable",
        "test_gaussian_mixture_setting_best_params",
    ],
    "bayesian_mixture": [
        "test_bayesian_mixture_mean_prior_initialisation",
        "test_bayesian_mixture_check_is_fitted", "test_bayesian_mixture_weights",
        "test_invariant_translation",  # fit_predict (17 s): in the slow full run
    ],
    "mixture": ["test_gaussian_mixture_n_iter",
                "test_mixture_n_components_greater_than_n_samples_error"],
}


# --------------------------------------------------------------------------
# the plugin side (in the subprocess): bind scikit-learn's names to ours
# --------------------------------------------------------------------------
def pytest_configure(config):
    """Bind ``GaussianMixture``/``BayesianGaussianMixture`` to ours before
    scikit-learn's test modules are imported (they import the names, and
    ``test_mixture`` builds instances at import), and in those modules."""
    if _RESULTS_ENV not in os.environ:
        return
    import importlib

    import sklearn.mixture

    from keras_gmm import sklearn as ours

    sklearn.mixture.GaussianMixture = ours.GaussianMixture
    sklearn.mixture.BayesianGaussianMixture = ours.BayesianGaussianMixture
    for name in MODULES.values():
        module = importlib.import_module(name)
        for attr in ("GaussianMixture", "BayesianGaussianMixture"):
            if hasattr(module, attr):
                setattr(module, attr, getattr(ours, attr))
    global _SUITE_RESULTS
    _SUITE_RESULTS = {}


_SUITE_RESULTS = None  # test id -> outcome, in the subprocess


def pytest_runtest_logreport(report):
    if _SUITE_RESULTS is None:
        return
    if report.when == "call" or report.outcome != "passed":
        entry = _SUITE_RESULTS.setdefault(report.nodeid.split("/")[-1], {})
        if report.when == "call":
            entry["seconds"] = entry.get("seconds", 0.0) + report.duration
        if report.outcome != "passed" or "outcome" not in entry:
            entry["outcome"] = report.outcome
            if report.outcome == "failed":
                entry["message"] = str(report.longrepr)[-1500:]


def pytest_sessionfinish(session, exitstatus):
    if _SUITE_RESULTS is None:
        return
    import importlib

    bound = {}  # what each module's names are at the end: ours
    for name in MODULES.values():
        module = importlib.import_module(name)
        for attr in ("GaussianMixture", "BayesianGaussianMixture"):
            if hasattr(module, attr):
                bound[f"{name}.{attr}"] = getattr(module, attr).__module__
    Path(os.environ[_RESULTS_ENV]).write_text(
        json.dumps({"tests": _SUITE_RESULTS, "bound": bound}, indent=1)
    )


# --------------------------------------------------------------------------
# the test side: run the modules, report
# --------------------------------------------------------------------------
def _module_path(key):
    import importlib.util

    return Path(importlib.util.find_spec(MODULES[key]).origin)


def run_sklearn_suites(tmp_path, only=None, float32=False, timeout=1800):
    """Run scikit-learn's test modules (:data:`MODULES`) against our
    estimators in one pytest subprocess (one TensorFlow start): every test,
    or ``only`` (``{key: [test names]}``, each with all its
    parametrizations); ``float32``: their float32 cases too
    (``SKLEARN_RUN_FLOAT32_TESTS=1``). Returns ``{test id: {"outcome": ...,
    "message": ...}}``."""
    site = _module_path("mixture").parents[3]  # above sklearn/: its conftest applies
    if only is None:
        targets = [str(_module_path(key)) for key in sorted(MODULES)]
    else:
        targets = [f"{_module_path(key)}::{name}"
                   for key in sorted(only) for name in only[key]]
    results = tmp_path / "sklearn_suites.json"
    args = [sys.executable, "-m", "pytest", *targets, "-q", "-p", "no:cacheprovider",
            "-p", "tests.test_sklearn_suites", f"--confcutdir={site}",
            f"--rootdir={site}", "-W", "ignore::DeprecationWarning"]
    for test_id in DESELECTED:
        # node ids are relative to the rootdir; a prefix deselects every
        # parametrization
        file_name, name = test_id.split("::")
        node = next(p for p in map(_module_path, MODULES) if p.name == file_name)
        args += ["--deselect", f"{node.relative_to(site).as_posix()}::{name}"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               SKLEARN_RUN_FLOAT32_TESTS="1" if float32 else "0",
               **{_RESULTS_ENV: str(results)})
    done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert results.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(results.read_text())
    assert set(report["bound"].values()) == {"keras_gmm.sklearn"}, report["bound"]
    return report["tests"]


def _check_outcomes(results):
    failed = {k: v.get("message", "") for k, v in results.items()
              if v["outcome"] == "failed"}
    assert not failed, f"{len(failed)} of {len(results)} failed:\n\n" + "\n\n".join(
        f"{k}:\n{v}" for k, v in failed.items())
    for key in MODULES:  # every module ran
        file_name = _module_path(key).name
        assert any(k.startswith(file_name) and v["outcome"] == "passed"
                   for k, v in results.items()), file_name


def _fast_subset_job(out):
    return run_sklearn_suites(out, only=FAST_SUBSET)


@pytest.mark.background.with_args(_fast_subset_job)  # one pytest subprocess, in the background
def test_scikit_learns_mixture_tests_fast_subset(background_result):
    results = background_result
    ran = {test_id.split("[")[0] for test_id in results}
    wanted = {f"{_module_path(key).name}::{name}"
              for key, names in FAST_SUBSET.items() for name in names}
    assert ran == wanted, (sorted(wanted - ran), sorted(ran - wanted), results)
    _check_outcomes(results)


@pytest.mark.slow
def test_scikit_learns_mixture_tests_in_full(tmp_path):
    results = run_sklearn_suites(tmp_path, float32=True)
    _check_outcomes(results)
    assert not any(v["outcome"] == "skipped" for v in results.values()), [
        k for k, v in results.items() if v["outcome"] == "skipped"]


def test_deselected_tests_exist_in_the_installed_modules():
    import importlib

    for test_id in DESELECTED:
        file_name, name = test_id.split("::")
        module = importlib.import_module(
            next(m for m in MODULES.values() if m.endswith(file_name[:-3]))
        )
        assert callable(getattr(module, name, None)), test_id


# --------------------------------------------------------------------------
# check_estimator
# --------------------------------------------------------------------------
def _estimators():
    from keras_gmm.sklearn import BayesianGaussianMixture, GaussianMixture

    return [GaussianMixture(), BayesianGaussianMixture()]


def _parametrize_with_checks():
    from sklearn.utils.estimator_checks import parametrize_with_checks

    return parametrize_with_checks(_estimators())


@_parametrize_with_checks()
def test_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        check(estimator)
