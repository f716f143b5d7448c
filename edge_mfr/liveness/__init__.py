"""Presentation-attack detection: is the face at the door a live person, not a photo or a screen?"""
