"""Fit job: StandardScaler + PCA on MobileNetV2 features, registered in MLflow."""
