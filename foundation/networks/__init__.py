"""What shapes a network (the Architecture that Model.py takes) and
ImageNet-trained weights for ResNet50's trunk."""
