"""Fit jobs: StandardScaler + PCA + a classifier head on MobileNetV2 features, registered in MLflow; the refit from the lake."""
