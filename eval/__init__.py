"""Evaluation: trec_eval metrics (via pytrec-eval-terrier), ROC-AUC, runs and reports."""
