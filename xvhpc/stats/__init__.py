"""Torch-free statistics for model details: bootstrap confidence intervals (image- or
patient-level), calibration, operating points, and the decision rule serve and export apply.

Point estimates come from scikit-learn; the bootstrap re-computes the same quantities for
every resample at once with numpy (resamples are sample weights), and the test suite checks
those vectorised kernels against scikit-learn with the same weights.
"""
