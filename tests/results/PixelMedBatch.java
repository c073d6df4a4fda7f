import com.pixelmed.dicom.AttributeList;
import com.pixelmed.dicom.TagFromName;
import com.pixelmed.validate.DicomInstanceValidator;
import com.pixelmed.validate.DicomSRValidator;

/**
 * PixelMed's DicomSRValidator or DicomInstanceValidator over many files in one JVM: the
 * validators compile their XSLT once (most of a run's time), then check each file as their
 * own main methods do (same options), its output between "=== BEGIN path" and "=== END path".
 * Run with the JDK's source launcher: java -cp pixelmed.jar PixelMedBatch.java VALIDATOR FILES.
 */
public class PixelMedBatch {
    public static void main(String[] args) throws Exception {
        boolean sr = args[0].equals("DicomSRValidator");
        if (!sr && !args[0].equals("DicomInstanceValidator")) {
            throw new IllegalArgumentException("expected DicomSRValidator or DicomInstanceValidator, found " + args[0]);
        }
        DicomSRValidator srValidator = sr ? new DicomSRValidator() : null;
        DicomInstanceValidator iodValidator = sr ? null : new DicomInstanceValidator();
        for (int i = 1; i < args.length; i++) {
            System.out.println("=== BEGIN " + args[i]);
            try {
                if (sr) {
                    System.out.print(srValidator.validate(args[i]));
                } else {
                    AttributeList list = new AttributeList();
                    list.read(args[i], TagFromName.PixelData);
                    System.out.print(iodValidator.validate(list));
                }
            } catch (Exception e) {
                System.out.println("Exception: " + e);
            }
            System.out.println("=== END " + args[i]);
        }
    }
}
