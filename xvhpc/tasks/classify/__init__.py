"""Image classification (``task: classify``): one class per image, transfer-learned torchvision
classifiers, accuracy/AUC with intervals, calibration and an operating point."""
